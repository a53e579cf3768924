"""Blending VL embeddings into text embeddings: pure tensor functions (BRIEF §5).

Three steps, each its own function: `align_length` (VL sequence to the text's length),
`align_statistics` (scale / normalise / mask outlier dimensions) and `mix` (with `alpha`:
0 = pure text, 1 = pure VL). `vl_share` says how much of what the DiT receives comes from the
VL side once its first operation, a per-token RMSNorm, has been applied. All sequences are
`[tokens, dim]`; statistics may weight tokens (several references, parts of one extraction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.request import BLEND_MODES, LENGTH_MODES, NORMALIZATIONS, OUTLIER_MODES  # noqa: F401 - declared with the request
from ..core.sequence import resample

EPS = 1e-6


@dataclass(frozen=True)
class ReferenceStats:
    """Per-dimension mean and std of the text encoder's embeddings at one layer."""

    mean: torch.Tensor
    std: torch.Tensor


def _choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown: use one of {', '.join(choices)}.")


def length_mode_used(vl_length: int, length: int, mode: str) -> str:
    """The length alignment that really runs: `truncate` cannot lengthen, so a VL sequence
    shorter than the text is interpolated instead (callers report this)."""
    _choice("length_mode", mode, LENGTH_MODES)
    return "interpolate" if mode == "truncate" and vl_length < length else mode


def align_length(vl: torch.Tensor, length: int, mode: str = "interpolate") -> torch.Tensor:
    """The VL sequence resampled to `length` tokens (`truncate` keeps only the first ones;
    see `length_mode_used` for a VL sequence shorter than `length`)."""
    return resample(vl, length, length_mode_used(vl.shape[0], length, mode))


def moments(x: torch.Tensor, weights: torch.Tensor | None = None, per_dim: bool = True):
    """Mean and (population) std of `x` over tokens (`per_dim`) or over all values, each token
    counted with its weight (weights sum to 1; None = equal)."""
    x = x.float()
    if weights is None:
        weights = torch.full((x.shape[0],), 1.0 / x.shape[0])
    w = (weights.float() / weights.sum())[:, None]
    if per_dim:
        mean = (w * x).sum(dim=0)
        return mean, torch.sqrt((w * (x - mean) ** 2).sum(dim=0))
    mean = (w * x).sum() / x.shape[1]
    return mean, torch.sqrt((w * (x - mean) ** 2).sum() / x.shape[1])


def dim_std_ratio(x: torch.Tensor, ref: ReferenceStats, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension std of `x` over the reference's, relative to the median dimension.

    Relative, so the ratio does not depend on the overall scale (VL output is ~5x smaller than
    text): a dimension at 10 is ten times as spread out, compared with the text encoder, as a
    typical dimension.
    """
    raw = moments(x, weights)[1] / (ref.std.float() + EPS)
    return raw / (raw.median() + EPS)


MAX_DIM_FACTOR = 100.0  # per_dim normalisation never stretches a dimension more than this


@dataclass
class StatsTransform:
    """Statistics alignment as a fixed transform, fitted once and applied to any sequence (the
    aligned VL sequence, and the neutral one for style_delta, so both get the same scaling)."""

    low: torch.Tensor  # [dim] clamp bounds (±inf where nothing is clamped)
    high: torch.Tensor
    mask: torch.Tensor  # [dim] outlier masking factors (0 = zeroed, <1 = scaled down)
    center: torch.Tensor  # [dim] per-dim normalisation scales around this mean
    dim_factor: torch.Tensor  # [dim] per-dim normalisation factors
    global_factor: float
    outlier_dims: list

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.maximum(torch.minimum(x.float(), self.high), self.low) * self.mask
        return ((x - self.center) * self.dim_factor + self.center) * self.global_factor


def global_factor(x: torch.Tensor, target: float) -> float:
    """The one factor that gives `x` the global std `target`."""
    return float(target) / (float(x.float().std()) + EPS)


def fit_statistics(
    source: torch.Tensor,
    aligned: torch.Tensor | None,
    text: torch.Tensor | None,
    ref: ReferenceStats,
    scale_to_text: bool = True,
    target_std: float = 0.0,
    normalization: str = "global",
    outlier_mode: str = "none",
    threshold: float = 10.0,
    weights: torch.Tensor | None = None,
) -> StatsTransform:
    """Fit the statistics alignment (BRIEF §5).

    Per-dimension statistics (outlier ratios, per-dim spread) come from `source`, the VL tokens
    at full resolution (hundreds of tokens, not the few left after length alignment), each
    counted with its weight in `weights`. The global factor is fitted on `aligned`, the
    sequence actually mixed, so its std meets the target (skipped when `aligned` is None: the
    caller fits it with `global_factor` once the token-wise part has been applied).

    - outliers (relative std ratio > `threshold`): `zero` them, `clamp` their values to the spread
      a dimension at the threshold would have, or `scale` them down to the threshold;
    - with `scale_to_text`: `per_dim` sets each dimension's spread (around its mean) to the text
      encoder's reference std (at most x100), `global` one factor to the target std
      (`target_std` if > 0, else the text's std), `hybrid` both.
    """
    _choice("outlier_mode", outlier_mode, OUTLIER_MODES)
    _choice("normalization", normalization, NORMALIZATIONS)
    if threshold <= 0:
        raise ValueError(f"outlier_threshold={threshold} must be positive: the default is 10.")
    source = source.float()
    dim = source.shape[1]
    inf = torch.full((dim,), float("inf"))
    t = StatsTransform(-inf, inf.clone(), torch.ones(dim), torch.zeros(dim), torch.ones(dim), 1.0, [])
    ratio = dim_std_ratio(source, ref, weights)
    dims = torch.nonzero(ratio > threshold).flatten()
    t.outlier_dims = dims.tolist()
    if outlier_mode == "zero":
        t.mask[dims] = 0.0
    elif outlier_mode == "scale":
        t.mask[dims] = threshold / ratio[dims]
    elif outlier_mode == "clamp" and dims.numel():
        center, std = moments(source[:, dims], weights)
        spread = std * threshold / ratio[dims]
        t.low[dims], t.high[dims] = center - spread, center + spread
    if scale_to_text and normalization in ("per_dim", "hybrid"):
        center, spread = moments(t.apply(source), weights)
        spread = torch.clamp(spread, min=float(spread.median()) * 1e-3 + EPS)
        t.dim_factor = torch.clamp(ref.std.float() / spread, max=MAX_DIM_FACTOR)
        t.center = center  # each dim is stretched around its own mean
    if scale_to_text and normalization in ("global", "hybrid") and aligned is not None:
        target = float(target_std) if target_std and target_std > 0 else float(text.float().std())
        t.global_factor = global_factor(t.apply(aligned), target)
    return t


def mask_outliers(x: torch.Tensor, ref: ReferenceStats, mode: str = "none", threshold: float = 10.0):
    """Outlier masking alone; returns (x, outlier dims)."""
    t = fit_statistics(x, x, x, ref, scale_to_text=False, outlier_mode=mode, threshold=threshold)
    return (x if mode == "none" else t.apply(x).to(x.dtype)), t.outlier_dims


def align_statistics(vl: torch.Tensor, text: torch.Tensor, ref: ReferenceStats, scale_to_text: bool = True,
                     target_std: float = 0.0, normalization: str = "global", outlier_mode: str = "none",
                     threshold: float = 10.0, source: torch.Tensor | None = None):
    """Fit on `source` (default: `vl` itself) and apply to `vl`; returns (vl, outlier dims)."""
    t = fit_statistics(vl if source is None else source, vl, text, ref, scale_to_text, target_std,
                       normalization, outlier_mode, threshold)
    if not scale_to_text and outlier_mode == "none":
        return vl, t.outlier_dims
    return t.apply(vl).to(vl.dtype), t.outlier_dims


def rms_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each token divided by its root mean square (what the DiT's caption RMSNorm does)."""
    return x / torch.sqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + EPS).to(x.dtype)


def _adain(text: torch.Tensor, style: tuple, per_dim: bool) -> torch.Tensor:
    """Text re-normalised to the style's (mean, std), per dimension or over all values."""
    t_mean, t_std = moments(text, per_dim=per_dim)
    v_mean, v_std = style
    return (text - t_mean) / (t_std + EPS) * v_std + v_mean


def components(text: torch.Tensor, vl: torch.Tensor, alpha: float, mode: str = "linear",
               neutral: torch.Tensor | None = None, style: tuple | None = None):
    """The blend as (text part, VL part), whose sum is what `mix` returns.

    For `linear` and `linear_rms` the parts are the weighted text and VL terms; for `adain*` and
    `style_delta` the text part is the text itself and the VL part is everything the VL changed.
    `concat` appends the VL tokens after the text (any length): each appended token is
    alpha·vl + (1−alpha)·(the mean text token), since a plain scale would not survive the DiT's
    caption RMSNorm; alpha 0 is the text alone.
    `style` gives the VL's (mean, std) for the adain modes (default: those of `vl`); the caller
    passes the whole extraction's, not those of the few tokens left after length alignment.
    """
    _choice("blend_mode", mode, BLEND_MODES)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is out of range: use 0 (pure text) to 1 (pure VL).")
    if mode in ("linear", "linear_rms") and vl.shape != text.shape:
        raise ValueError(f"VL sequence {tuple(vl.shape)} does not match text {tuple(text.shape)}: align it first.")
    if mode == "linear":
        return (1.0 - alpha) * text, alpha * vl
    if mode == "concat":
        if alpha == 0.0:
            return text.clone(), torch.zeros_like(text)
        text_tail = ((1.0 - alpha) * text.mean(dim=0)).expand_as(vl)
        return torch.cat([text, text_tail]), torch.cat([torch.zeros_like(text), alpha * vl])
    if mode == "linear_rms":
        if alpha in (0.0, 1.0):
            return (text.clone(), torch.zeros_like(vl)) if alpha == 0 else (torch.zeros_like(text), vl.clone())
        rms_t = torch.sqrt(text.pow(2).mean(dim=-1, keepdim=True) + EPS)
        rms_v = torch.sqrt(vl.pow(2).mean(dim=-1, keepdim=True) + EPS)
        rms = alpha * rms_v + (1.0 - alpha) * rms_t
        return (1.0 - alpha) * text / rms_t * rms, alpha * vl / rms_v * rms
    if mode == "style_delta":
        if neutral is None:
            raise ValueError("blend_mode='style_delta' needs a neutral extraction to subtract.")
        return text, (alpha * (vl.mean(dim=0) - neutral.mean(dim=0))).expand_as(text)
    per_dim = mode == "adain_per_dim"
    styled = _adain(text, style if style is not None else moments(vl, per_dim=per_dim), per_dim)
    return text, alpha * (styled - text)


def mix(text: torch.Tensor, vl: torch.Tensor, alpha: float, mode: str = "linear",
        neutral: torch.Tensor | None = None, style: tuple | None = None) -> torch.Tensor:
    """Blend `vl` (already aligned to the text's length) into `text` with weight `alpha`.

    - `linear`: alpha·vl + (1−alpha)·text. alpha 0 is exactly text, 1 exactly vl.
    - `linear_rms`: mixes per-token RMS-normalised tokens (what the DiT sees), then restores an
      interpolated per-token RMS; alpha 0/1 are exactly text/vl.
    - `adain`: text re-normalised to the VL's global mean/std, mixed with text by alpha.
    - `adain_per_dim`: the same per dimension (statistics over all tokens of each sequence).
    - `style_delta`: text + alpha·(mean token of vl − mean token of `neutral`), where neutral is an
      extraction of a plain image.
    """
    text_part, vl_part = components(text, vl, alpha, mode, neutral, style)
    return text_part + vl_part


def vl_share(text_part: torch.Tensor, vl_part: torch.Tensor, norm_weight: torch.Tensor | None = None) -> dict:
    """How much of each token the DiT receives comes from the VL side (BRIEF §5).

    The caption RMSNorm turns a token `t + v` into `w ⊙ (t + v) / rms(t + v)`: a sum of the text
    part and the VL part, each shrunk by the same factor. Their sizes after the norm's weight `w`
    give the VL share `|w⊙v| / (|w⊙v| + |w⊙t|)` per token. A linear blend with equal per-token RMS
    on both sides reads exactly alpha; an unscaled VL sequence (~5x smaller than text) far less.
    Returns the mean over tokens, the min and the max.
    """
    w = torch.ones(text_part.shape[1]) if norm_weight is None else norm_weight.detach().float().cpu()
    t = (w * text_part.float()).norm(dim=-1)
    v = (w * vl_part.float()).norm(dim=-1)
    share = v / (v + t).clamp(min=EPS)
    return {"mean": round(float(share.mean()), 4), "min": round(float(share.min()), 4),
            "max": round(float(share.max()), 4)}


def weighted_sum(parts: list[tuple[torch.Tensor, float]], length: int, mode: str = "interpolate") -> torch.Tensor:
    """Weighted mean of sequences aligned to `length` tokens (weights normalised to sum 1).

    Serves multi-reference conditioning, the intra-VL blend (image part vs text part of one
    extraction) and dual extraction (image-only style vs text-only content).
    """
    weights = [w for _, w in parts]
    if not parts or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights {weights} must be non-negative and not all zero.")
    total = sum(weights)
    return sum(align_length(seq, length, mode) * (w / total) for seq, w in parts)


def sequence_stats(x: torch.Tensor, ref: ReferenceStats | None = None,
                   weights: torch.Tensor | None = None) -> dict:
    """Global mean/std and, against the reference, per-dim std correlation and the most spread
    dims (tokens counted with `weights`)."""
    x = x.float()
    mean, std = moments(x, weights, per_dim=False)
    stats = {"tokens": int(x.shape[0]), "mean": round(float(mean), 6), "std": round(float(std), 6)}
    if ref is not None and x.shape[0] > 1:
        ratio = dim_std_ratio(x, ref, weights)
        worst = torch.argsort(ratio, descending=True)[:5]
        dim_std = moments(x, weights)[1]
        stats.update({
            "std_correlation": round(float(torch.corrcoef(torch.stack([dim_std, ref.std.float()]))[0, 1]), 4),
            "dim_std_ratio_max": round(float(ratio.max()), 3),
            "worst_dims": [[int(d), round(float(ratio[d]), 2)] for d in worst],
        })
    return stats

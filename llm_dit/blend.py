"""Blending VL embeddings into text embeddings: pure tensor functions (BRIEF §5).

Three steps, each its own function: `align_length` (VL sequence to the text's length),
`align_statistics` (scale / normalise / mask outlier dimensions) and `mix` (with `alpha`:
0 = pure text, 1 = pure VL). `effective_alpha` says where a blend really sits once the DiT's
first operation, a per-token RMSNorm, has been applied. All sequences are `[tokens, dim]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sequence import resample

LENGTH_MODES = ("interpolate", "truncate", "pool")
NORMALIZATIONS = ("global", "per_dim", "hybrid")
OUTLIER_MODES = ("none", "zero", "clamp", "scale")
BLEND_MODES = ("linear", "linear_rms", "adain", "adain_per_dim", "style_delta")
EPS = 1e-6


@dataclass(frozen=True)
class ReferenceStats:
    """Per-dimension mean and std of the text encoder's embeddings at one layer."""

    mean: torch.Tensor
    std: torch.Tensor


def _choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown: use one of {', '.join(choices)}.")


def align_length(vl: torch.Tensor, length: int, mode: str = "interpolate") -> torch.Tensor:
    """The VL sequence resampled to `length` tokens (`truncate` keeps only the first ones)."""
    _choice("length_mode", mode, LENGTH_MODES)
    if mode == "truncate" and vl.shape[0] < length:
        mode = "interpolate"  # nothing to cut: a shorter VL sequence is stretched instead
    return resample(vl, length, mode)


def dim_std_ratio(x: torch.Tensor, ref: ReferenceStats) -> torch.Tensor:
    """Per-dimension std of `x` over the reference's, relative to the median dimension.

    Relative, so the ratio does not depend on the overall scale (VL output is ~5x smaller than
    text): a dimension at 10 is ten times as spread out, compared with the text encoder, as a
    typical dimension.
    """
    raw = x.float().std(dim=0, correction=0) / (ref.std.float() + EPS)
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


def fit_statistics(
    source: torch.Tensor,
    aligned: torch.Tensor,
    text: torch.Tensor,
    ref: ReferenceStats,
    scale_to_text: bool = True,
    target_std: float = 0.0,
    normalization: str = "global",
    outlier_mode: str = "none",
    threshold: float = 10.0,
) -> StatsTransform:
    """Fit the statistics alignment (BRIEF §5).

    Per-dimension statistics (outlier ratios, per-dim spread) come from `source`, the VL sequence
    at full resolution (hundreds of tokens, not the few left after length alignment). The global
    factor is fitted on `aligned`, the sequence actually mixed, so its std meets the target.

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
    ratio = dim_std_ratio(source, ref)
    dims = torch.nonzero(ratio > threshold).flatten()
    t.outlier_dims = dims.tolist()
    if outlier_mode == "zero":
        t.mask[dims] = 0.0
    elif outlier_mode == "scale":
        t.mask[dims] = threshold / ratio[dims]
    elif outlier_mode == "clamp":
        center = source[:, dims].mean(dim=0)
        spread = source[:, dims].std(dim=0, correction=0) * threshold / ratio[dims]
        t.low[dims], t.high[dims] = center - spread, center + spread
    if scale_to_text and normalization in ("per_dim", "hybrid"):
        masked = t.apply(source)
        spread = masked.std(dim=0, correction=0)
        spread = torch.clamp(spread, min=float(spread.median()) * 1e-3 + EPS)
        t.dim_factor = torch.clamp(ref.std.float() / spread, max=MAX_DIM_FACTOR)
        t.center = masked.mean(dim=0)  # each dim is stretched around its own mean
    if scale_to_text and normalization in ("global", "hybrid"):
        target = float(target_std) if target_std and target_std > 0 else float(text.float().std())
        t.global_factor = target / (float(t.apply(aligned).std()) + EPS)
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


def _adain(text: torch.Tensor, vl: torch.Tensor, dims: tuple | None) -> torch.Tensor:
    """Text re-normalised to the VL's mean/std over ALL tokens (and dims, when `dims` is None)."""
    kw = {"dim": dims, "keepdim": True} if dims else {}
    t_mean, t_std = text.mean(**kw), text.std(correction=0, **kw)
    v_mean, v_std = vl.mean(**kw), vl.std(correction=0, **kw)
    return (text - t_mean) / (t_std + EPS) * v_std + v_mean


def mix(text: torch.Tensor, vl: torch.Tensor, alpha: float, mode: str = "linear",
        neutral: torch.Tensor | None = None) -> torch.Tensor:
    """Blend `vl` (already aligned to the text's length) into `text` with weight `alpha`.

    - `linear`: alpha·vl + (1−alpha)·text. alpha 0 is exactly text, 1 exactly vl.
    - `linear_rms`: mixes per-token RMS-normalised tokens (what the DiT sees), then restores an
      interpolated per-token RMS; alpha 0/1 are exactly text/vl.
    - `adain`: text re-normalised to the VL's global mean/std, mixed with text by alpha.
    - `adain_per_dim`: the same per dimension (statistics over all tokens of each sequence).
    - `style_delta`: text + alpha·(mean token of vl − mean token of `neutral`), where neutral is an
      extraction of a plain image.
    """
    _choice("blend_mode", mode, BLEND_MODES)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} is out of range: use 0 (pure text) to 1 (pure VL).")
    if mode in ("linear", "linear_rms", "adain", "adain_per_dim") and vl.shape != text.shape:
        raise ValueError(f"VL sequence {tuple(vl.shape)} does not match text {tuple(text.shape)}: align it first.")
    if mode == "linear":
        return alpha * vl + (1.0 - alpha) * text
    if mode == "linear_rms":
        if alpha in (0.0, 1.0):
            return (vl if alpha else text).clone()
        rms_t = torch.sqrt(text.pow(2).mean(dim=-1, keepdim=True) + EPS)
        rms_v = torch.sqrt(vl.pow(2).mean(dim=-1, keepdim=True) + EPS)
        return (alpha * vl / rms_v + (1.0 - alpha) * text / rms_t) * (alpha * rms_v + (1.0 - alpha) * rms_t)
    if mode == "style_delta":
        if neutral is None:
            raise ValueError("blend_mode='style_delta' needs a neutral extraction to subtract.")
        return text + alpha * (vl.mean(dim=0) - neutral.mean(dim=0))
    styled = _adain(text, vl, (0,) if mode == "adain_per_dim" else None)
    return alpha * styled + (1.0 - alpha) * text


def effective_alpha(text: torch.Tensor, vl: torch.Tensor, blended: torch.Tensor) -> float:
    """Where `blended` sits between text (0) and vl (1) after per-token RMS normalisation.

    The least-squares position along the line from RMS-normalised text to RMS-normalised VL:
    sum<B̂−T̂, V̂−T̂> / sum|V̂−T̂|². A linear blend of an unscaled VL sequence (std ~5x below the
    text's) at alpha 0.5 reads far below 0.5 here: the text dominates what the DiT sees.
    """
    t, v, b = (rms_normalize(x.float()) for x in (text, vl, blended))
    if v.shape != t.shape:
        v = resample(v, t.shape[0], "interpolate")
    direction = v - t
    denom = float(direction.pow(2).sum())
    return 0.0 if denom < EPS else float(((b - t) * direction).sum()) / denom


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


def sequence_stats(x: torch.Tensor, ref: ReferenceStats | None = None, threshold: float = 10.0) -> dict:
    """Global mean/std, and against the reference: per-dim std correlation, ratios, outlier dims."""
    x = x.float()
    stats = {"tokens": int(x.shape[0]), "mean": round(float(x.mean()), 6), "std": round(float(x.std()), 6)}
    if ref is not None and x.shape[0] > 1:
        ratio = dim_std_ratio(x, ref)
        worst = torch.argsort(ratio, descending=True)[:5]
        dim_std = x.std(dim=0, correction=0)
        stats.update({
            "std_correlation": round(float(torch.corrcoef(torch.stack([dim_std, ref.std.float()]))[0, 1]), 4),
            "dim_std_ratio_max": round(float(ratio.max()), 3),
            "worst_dims": [[int(d), round(float(ratio[d]), 2)] for d in worst],
            "outlier_dims": torch.nonzero(ratio > threshold).flatten().tolist(),
        })
    return stats

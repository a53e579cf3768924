"""Resampling a token sequence `[n, dim]` to a given length: the long-prompt modes (BRIEF §3)
and, later, the length alignment of VL embeddings (BRIEF §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .request import RESAMPLE_MODES


def resample(x: torch.Tensor, length: int, mode: str = "interpolate") -> torch.Tensor:
    """Return `x` ([n, dim]) with exactly `length` tokens.

    - `truncate`: the first `length` tokens (needs n >= length).
    - `interpolate`: linear resampling along the sequence; when shrinking, the linear (triangle)
      filter widens so every token contributes (antialiased), instead of sampling a few.
    - `pool`: adaptive average pooling over contiguous bins.
    - `attention_pool`: the same bins, each averaged with weights softmax(cos(token, mean)),
      so tokens close to the sequence's overall meaning weigh more than outliers.
    """
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"long_prompt_mode={mode!r} is unknown: use one of {', '.join(RESAMPLE_MODES)}.")
    if length < 1:
        raise ValueError(f"cannot resample to {length} tokens: the target length must be at least 1.")
    n = x.shape[0]
    if n == length:
        return x
    if mode == "truncate":
        if n < length:
            raise ValueError(f"truncate cannot lengthen a sequence ({n} -> {length} tokens): use interpolate.")
        return x[:length]
    work = x.float().T.unsqueeze(0)  # [1, dim, n]
    if mode == "interpolate":
        out = F.interpolate(work.unsqueeze(2), size=(1, length), mode="bilinear", antialias=True,
                            align_corners=False)[0, :, 0].T
    elif mode == "pool":
        out = F.adaptive_avg_pool1d(work, length)[0].T
    else:
        out = _attention_pool(x.float(), length)
    return out.to(x.dtype)


def _attention_pool(x: torch.Tensor, length: int) -> torch.Tensor:
    n = x.shape[0]
    scores = F.cosine_similarity(x, x.mean(dim=0, keepdim=True), dim=-1)  # [n]
    out = []
    for i in range(length):  # same bin edges as adaptive pooling
        start, end = (i * n) // length, -(-((i + 1) * n) // length)
        weights = torch.softmax(scores[start:end], dim=0)
        out.append(weights @ x[start:end])
    return torch.stack(out)

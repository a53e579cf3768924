"""The largest image the DiT can make, from its own config (nothing loads): its RoPE position axes
(`axes_lens`, in 2×2 latent patches of 16 px) bound the height and the width. The UI's sliders and
size presets follow it, and a size past it is refused before the queue, naming both fields when
both are too large and giving the nearest size that runs."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.request import field_meta

PATCH = 16  # pixels per DiT token along an axis: VAE factor 8 × patch 2


def from_config(config: dict) -> tuple[int, int]:
    """(largest height, largest width) for a ZImageTransformer2DModel config."""
    axes = config["axes_lens"]
    return axes[1] * PATCH, axes[2] * PATCH


def dit_max_size(source: str) -> tuple[int, int]:
    """The DiT's (largest height, largest width), no larger than the request's declared maximum;
    the declared maximum when the config is not on disk (a hub model not downloaded yet)."""
    declared = field_meta("height")["maximum"], field_meta("width")["maximum"]
    path = Path(source) / "transformer" / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "transformer/config.json")
        path = Path(cached) if isinstance(cached, str) else None
    if path is None:
        return declared
    try:
        most = from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return declared
    return min(most[0], declared[0]), min(most[1], declared[1])


def check_size(height: int, width: int, most: tuple[int, int]) -> None:
    """ValueError naming every field past the DiT's maximum, with the nearest size that runs."""
    over = [f"{name}={value}" for name, value, limit in (("height", height, most[0]), ("width", width, most[1]))
            if value > limit]
    if over:
        fits = f"{min(height, most[0])}×{min(width, most[1])}"
        raise ValueError(f"{' and '.join(over)} {'is' if len(over) == 1 else 'are'} larger than this DiT supports "
                         f"(at most {most[0]}×{most[1]}, height×width): use {fits}.")

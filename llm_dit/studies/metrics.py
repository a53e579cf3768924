"""Cheap image metrics that need no extra model: colour-palette distance and SSIM to a reference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PALETTE = 8


def _palette(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The image's `PALETTE` dominant colours (median cut) and their pixel shares."""
    small = image.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR)
    quantized = small.quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
    colours = np.array(quantized.getpalette()[: 3 * PALETTE], dtype=np.float64).reshape(-1, 3)
    counts = np.bincount(np.asarray(quantized).ravel(), minlength=len(colours))[: len(colours)]
    keep = counts > 0
    return colours[keep], counts[keep] / counts.sum()


def palette_distance(image: Image.Image, reference: Image.Image) -> float:
    """Symmetric, share-weighted mean distance from each dominant colour to the nearest dominant
    colour of the other image, in RGB, scaled to [0, 1] (0 = same palette)."""
    (a, wa), (b, wb) = _palette(image), _palette(reference)
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1) / np.linalg.norm([255, 255, 255])
    return float(0.5 * (wa @ d.min(axis=1) + wb @ d.min(axis=0)))


def ssim(image: Image.Image, reference: Image.Image, window: int = 7) -> float:
    """Mean structural similarity of the luminance (reference resized to the image), 1 = identical."""
    size = image.size
    x = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float64) / 255.0)[None, None]
    y = torch.from_numpy(np.asarray(reference.convert("L").resize(size, Image.Resampling.BICUBIC),
                                    dtype=np.float64) / 255.0)[None, None]
    mean = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())

"""Labelled image grids (sweeps) and difference heatmaps between images."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEAT_FULL = 0.25  # a mean RGB difference of a quarter of the range shows at full heat


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _label(value, most: int = 32) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= most else text[: most - 1] + "…"


def draw_grid(images: dict, x_axis: str, xs: list, y_axis: str, ys: list, title: str = "") -> Image.Image:
    """Cells laid out X across, Y down; the axis names and values on the top and left margins."""
    sample = next(iter(images.values()), None)
    w, h = sample.size if sample else (256, 256)
    label = max(16, min(w, h) // 12)
    font = _font(label)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    y_texts = [_label(y) for y in ys] + ([f"{y_axis}:"] if y_axis else [])
    left = int(max(measure(t, font=font) for t in y_texts)) + 16 if y_axis else 0
    line = label + 6
    top = (line if title else 0) + 2 * line
    grid = Image.new("RGB", (max(left + w * len(xs), int(measure(f"{x_axis}:", font=font)) + left + 8),
                             top + h * len(ys)), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((6, 2), title, fill="black", font=font)
    row = line if title else 0
    draw.text((left + 4, row + 2), f"{x_axis}:", fill="dimgray", font=font)
    if y_axis:
        draw.text((6, row + line + 2), f"{y_axis}:", fill="dimgray", font=font)
    for i, x in enumerate(xs):
        draw.text((left + i * w + w // 2, row + line + 2), _label(x, max(8, w // (label // 2 + 1))), fill="black",
                  font=font, anchor="mt")
        for j, y in enumerate(ys):
            image = images.get((x, y))
            if image is not None:
                grid.paste(image.resize((w, h)), (left + i * w, top + j * h))
            if i == 0 and y_axis:
                draw.text((6, top + j * h + h // 2), _label(y), fill="black", font=font, anchor="lm")
    return grid


def difference(image: Image.Image, base: Image.Image) -> tuple[float, Image.Image]:
    """Mean absolute difference (0-1, RGB) of `image` against `base` (resized to it), and a heatmap
    of the per-pixel difference: black (same) through red and yellow to white (≥ HEAT_FULL)."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    b = np.asarray(base.convert("RGB").resize(image.size, Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    diff = np.abs(a - b).mean(axis=-1)
    heat = np.clip(diff / HEAT_FULL, 0.0, 1.0) * 3.0  # 0-1 red, 1-2 green, 2-3 blue: black->red->yellow->white
    rgb = np.stack([np.clip(heat, 0, 1), np.clip(heat - 1, 0, 1), np.clip(heat - 2, 0, 1)], axis=-1)
    return float(diff.mean()), Image.fromarray((rgb * 255).round().astype(np.uint8))

"""Labelled image grids (sweeps) and difference heatmaps between images.

Every column and row of a grid carries its full label, `axis: value`, drawn at a size that follows
the cells' size. Margins and column widths come from the measured text: a label that is wider than
its cell wraps at spaces, and a column widens rather than cut a word, so no label is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HEAT_FULL = 0.25  # a mean RGB difference of a quarter of the range shows at full heat
GRID_MAX_PIXELS = 16_000_000  # a grid's cells shrink to keep the whole grid's cells under this


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _value(value, most: int = 60) -> str:
    if isinstance(value, bool):  # as typed on the axis (think_block: off, on)
        return "on" if value else "off"
    text = " ".join(str(value).split())
    return text if len(text) <= most else text[: most - 1] + "…"


def axis_label(axis: str, value) -> str:
    """What a column or row is labelled with: the axis name and its value."""
    return f"{axis}: {_value(value)}"


def wrap(text: str, font, width: float) -> list[str]:
    """`text` in lines no wider than `width` (measured with `font`), broken at spaces only; a
    single word wider than `width` keeps its own line (the caller widens the column for it)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


@dataclass
class Label:
    text: str
    lines: list[str]
    box: tuple[int, int, int, int]  # left, top, right, bottom: the strip the text is drawn in
    align: str = "center"


@dataclass
class Layout:
    """Where everything of a grid goes; computed from the cell size and the measured labels."""
    size: tuple[int, int]
    font_size: int
    line: int  # line height, px
    labels: list[Label] = field(default_factory=list)
    slots: dict = field(default_factory=dict)  # (x, y) -> (left, top) of the cell's image


def layout(cell: tuple[int, int], x_axis: str, xs: list, y_axis: str, ys: list, title: str = "") -> Layout:
    """Columns as wide as the cell or their widest label line, rows as tall as the cell or their
    label (plus the same gap between cells both ways), the left margin as wide as the widest row
    label; a padding of half the font size around every label."""
    w, h = cell
    size = max(14, min(w, h) // 10)
    font = _font(size)
    ascent, descent = font.getmetrics()
    line, pad = ascent + descent, max(4, size // 2)
    x_lines = [wrap(axis_label(x_axis, x), font, max(w - 2 * pad, 1)) for x in xs]
    y_lines = [wrap(axis_label(y_axis, y), font, 8 * size) for y in ys] if y_axis else [[] for _ in ys]
    widest = lambda lines: max((font.getlength(t) for t in lines), default=0)  # noqa: E731
    # one gap between cells, across and down alike: at least a quarter of the font, or what the
    # widest column label needs beyond the cell's width
    gap = max([size // 4] + [int(widest(lines)) + 2 * pad - w for lines in x_lines])
    col = w + gap
    left = max((int(widest(lines)) + 2 * pad for lines in y_lines), default=0) if y_axis else 0
    row = max([h + gap] + [len(lines) * line + 2 * pad for lines in y_lines])
    title_h = line + 2 * pad if title else 0
    head = title_h + max(len(lines) for lines in x_lines) * line + 2 * pad
    width = max(left + col * len(xs), int(font.getlength(title)) + 2 * pad if title else 0)
    out = Layout((width, head + row * len(ys)), size, line)
    if title:
        out.labels.append(Label(title, [title], (0, 0, width, title_h), align="left"))
    for i, (x, lines) in enumerate(zip(xs, x_lines)):
        out.labels.append(Label(axis_label(x_axis, x), lines, (left + i * col, title_h, left + (i + 1) * col, head)))
        for j, y in enumerate(ys):
            out.slots[(x, y)] = (left + i * col + (col - w) // 2, head + j * row + (row - h) // 2)
    for j, (y, lines) in enumerate(zip(ys, y_lines)):
        if y_axis:
            out.labels.append(Label(axis_label(y_axis, y), lines, (0, head + j * row, left, head + (j + 1) * row),
                                    align="left"))
    return out


def draw_grid(images: dict, x_axis: str, xs: list, y_axis: str, ys: list, title: str = "") -> Image.Image:
    """Cells laid out X across, Y down; each column and row labelled `axis: value` (see `layout`).
    Cells shrink (aspect kept) so that all of them together stay under GRID_MAX_PIXELS."""
    sample = next(iter(images.values()), None)
    w, h = sample.size if sample else (256, 256)
    scale = min(1.0, (GRID_MAX_PIXELS / (w * h * max(1, len(xs)) * max(1, len(ys)))) ** 0.5)
    w, h = max(16, int(w * scale)), max(16, int(h * scale))
    plan = layout((w, h), x_axis, xs, y_axis, ys, title)
    font = _font(plan.font_size)
    grid = Image.new("RGB", plan.size, "white")
    draw = ImageDraw.Draw(grid)
    for label in plan.labels:
        left, top, right, bottom = label.box
        pad = max(4, plan.font_size // 2)
        y = top + (bottom - top - len(label.lines) * plan.line) // 2
        for text in label.lines:
            if label.align == "center":
                draw.text(((left + right) // 2, y), text, fill="black", font=font, anchor="ma")
            else:
                draw.text((left + pad, y), text, fill="black", font=font, anchor="la")
            y += plan.line
    for key, (left, top) in plan.slots.items():
        image = images.get(key)
        if image is not None:
            grid.paste(image.resize((w, h)), (left, top))
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

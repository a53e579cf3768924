"""Sweep grids: every label is drawn whole, inside its own strip, legible at the cells' scale;
sweep counts are the sweep's own."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from llm_dit.studies.compare import SweepSpec, run_sweep
from llm_dit.studies.grid import _font, axis_label, draw_grid, layout
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import VLRequest

CASES = {  # name: (cell size, x axis, xs, y axis, ys, title)
    "3x3 at 64 px": ((64, 64), "strength", [0.7, 0.8, 0.9], "alpha", [0.0, 0.3, 0.6], ""),
    "3x3 at 512 px, Z title": ((512, 512), "vl_hidden_layer", [-2, -6, -8], "normalization",
                               ["global", "per_dim", "hybrid"], "think_block: on"),
    "long prompts, one row": ((96, 64), "prompt", ["A fox on a hill", "A quiet harbour town at dusk"], "", [None], ""),
}


def ink(image: Image.Image, box) -> tuple | None:
    """The bounding box (in grid coordinates) of the non-white pixels inside `box`."""
    crop = np.asarray(image.crop(box).convert("L")) < 200
    if not crop.any():
        return None
    ys, xs = np.nonzero(crop)
    return box[0] + xs.min(), box[1] + ys.min(), box[0] + xs.max() + 1, box[1] + ys.max() + 1


def alone(text: str, font) -> int:
    """The ink width of `text` drawn by itself on a blank image."""
    size = (int(font.getlength(text)) + 20, font.size * 2)
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 5), text, fill="black", font=font)
    found = ink(image, (0, 0, *size))
    return found[2] - found[0]


def grid_of(case):
    (w, h), x_axis, xs, y_axis, ys, title = case
    rng = np.random.default_rng(0)
    images = {(x, y): Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for x in xs for y in ys}
    return draw_grid(images, x_axis, xs, y_axis, ys, title), layout((w, h), x_axis, xs, y_axis, ys, title)


@pytest.mark.parametrize("name", CASES)
def test_every_label_is_whole_and_fits_its_strip(name):
    (w, h), x_axis, xs, y_axis, ys, title = CASES[name]
    plan = layout((w, h), x_axis, xs, y_axis, ys, title)
    font = _font(plan.font_size)
    expected = [title] * bool(title) + [axis_label(x_axis, x) for x in xs] + (
        [axis_label(y_axis, y) for y in ys] if y_axis else [])
    assert [label.text for label in plan.labels] == expected
    assert axis_label("strength", 0.7) == "strength: 0.7"  # the axis name and the whole value
    assert (axis_label("think_block", True), axis_label("think_block", False)) == ("think_block: on", "think_block: off")
    assert plan.font_size >= 14 and plan.font_size >= min(w, h) // 10  # legible, and grows with the cells
    for label in plan.labels:
        assert " ".join(label.lines) == label.text  # wrapped at spaces, nothing dropped or cut
        left, top, right, bottom = label.box
        assert all(font.getlength(line) <= right - left for line in label.lines), label
        assert len(label.lines) * plan.line <= bottom - top, label


@pytest.mark.parametrize("name", CASES)
def test_the_rendered_labels_are_the_full_text_inside_their_strips(name):
    grid, plan = grid_of(CASES[name])
    font = _font(plan.font_size)
    assert grid.size == plan.size
    for label in plan.labels:
        found = ink(grid, label.box)
        assert found is not None, label.text
        left, top, right, bottom = label.box
        # not touching the strip's edges: nothing runs into the next label or gets cut off
        assert left < found[0] and found[2] < right and top < found[1] and found[3] <= bottom, label
        # as wide as its widest line drawn whole, alone, with the same font (a cut "rength:" is narrower)
        widest = max(alone(line, font) for line in label.lines)
        # (lines of a wrapped label start at slightly different ink offsets: a little slack, far
        # less than the narrowest character, ~font_size / 4)
        assert abs((found[2] - found[0]) - widest) <= 2 + plan.font_size // 10, (label.text, found, widest)
    # outside the labels and the cells the grid is blank: no text spills anywhere else
    mask = np.ones(grid.size[::-1], dtype=bool)
    for label in plan.labels:
        mask[label.box[1]:label.box[3], label.box[0]:label.box[2]] = False
    (w, h) = CASES[name][0]
    for left, top in plan.slots.values():
        mask[top:top + h, left:left + w] = False
    assert (np.asarray(grid.convert("L"))[mask] == 255).all()


def test_cells_sit_whole_in_their_slots():
    grid, plan = grid_of(CASES["3x3 at 64 px"])
    for (x, y), (left, top) in plan.slots.items():
        assert 0 <= left and left + 64 <= grid.width and 0 <= top and top + 64 <= grid.height
    assert len({pos for pos in plan.slots.values()}) == 9  # no two cells overlap at the same place


def test_sweep_counts_are_the_sweeps_own(settings, tmp_path):
    """A second sweep on the same manager reports its own loads and runs, not the process's totals."""
    fresh = ModelManager(settings)
    base = VLRequest(prompt="a fox", height=64, width=64, seed=3)
    ref = Image.new("RGB", (64, 64), (20, 90, 200))
    spec = SweepSpec("alpha", "0.2, 0.6")
    first = run_sweep(fresh, spec, base, [ref], tmp_path / "s1").counts
    assert (first["vl_loads"], first["extractions_run"], first["encodes_run"]) == (1, 1, 1)
    again = run_sweep(fresh, spec, base, [ref], tmp_path / "s2").counts  # everything cached: nothing loads or runs
    assert (again["vl_loads"], again["extractions_run"], again["encodes_run"]) == (0, 0, 0)
    fresh.clear_caches()
    third = run_sweep(fresh, spec, base, [ref], tmp_path / "s3").counts
    assert third["vl_loads"] == 1 and fresh.load_counts["vl"] == 2  # the process has loaded twice


def test_grid_captions_name_the_axes_and_the_z_value():
    from llm_dit.studies.compare import SweepResult

    sweep = SweepResult([("strength", [0.7, 0.9]), ("alpha", [0.0, 0.6]), ("think_block", [False, True])], [], {})
    assert sweep.captions() == ["strength × alpha (2 × 2) · think_block: off", "strength × alpha (2 × 2) · think_block: on"]
    assert sweep.captions(diff=True) == []  # no difference maps until the base cell is done
    assert SweepResult([("alpha", [0.0, 0.3, 0.6])], [], {}).captions() == ["alpha (3)"]


def test_a_grid_of_large_cells_is_bounded_and_small_cells_keep_their_size():
    from llm_dit.studies.grid import GRID_MAX_PIXELS

    big = {(x, y): Image.new("RGB", (2048, 2048), (x * 80, y * 80, 90)) for x in range(3) for y in range(3)}
    grid = draw_grid(big, "alpha", [0, 1, 2], "strength", [0, 1, 2])  # 9 × 4 MP of cells
    assert GRID_MAX_PIXELS / 2 < grid.size[0] * grid.size[1] < 1.5 * GRID_MAX_PIXELS  # ~80 MP unbounded
    small = draw_grid({(0, None): Image.new("RGB", (64, 64))}, "alpha", [0], "", [None])
    assert layout((64, 64), "alpha", [0], "", [None]).size == small.size

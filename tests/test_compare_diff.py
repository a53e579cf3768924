"""Sweeps: the prompt axis and difference maps against a base cell (issue 14 #11)."""

import numpy as np
import pytest
from PIL import Image

from llm_dit.studies.compare import SweepSpec, parse_values, run_sweep
from llm_dit.pipelines.recipe import vl_generate
from llm_dit.studies.grid import difference
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import VLRequest

REF = Image.new("RGB", (128, 128), (200, 60, 30))
BASE = VLRequest(prompt="a fox in a meadow", height=64, width=64, seed=11)
PROMPTS = "a fox in a meadow\na quiet harbour town at dusk"


def test_prompt_values_one_per_line_or_bar_separated():
    assert parse_values("prompt", PROMPTS) == ["a fox in a meadow", "a quiet harbour town at dusk"]
    assert parse_values("prompt", "a fox, running | a town") == ["a fox, running", "a town"]
    with pytest.raises(ValueError, match="axis 'prompt' repeats a value"):
        parse_values("prompt", "a fox\na fox")


def test_a_prompt_axis_shares_what_it_can(settings, tmp_path):
    fresh = ModelManager(settings)
    sweep = run_sweep(fresh, SweepSpec("prompt", PROMPTS, "alpha", "0.3, 0.6"), BASE, [REF], tmp_path / "s1")
    counts = sweep.counts
    # VL reads each prompt: one extraction and one encode per prompt, shared across alpha
    assert counts["distinct_extractions"] == counts["extractions_run"] == 2
    assert counts["distinct_texts"] == counts["encodes_run"] == 2
    for cell in sweep.finished():
        assert cell.result.metadata["request"]["prompt"] == cell.coords["prompt"]
        single = vl_generate(fresh, cell.request, [REF])
        assert np.array_equal(np.asarray(single.image), np.asarray(cell.result.image))
    fixed = VLRequest(**{**BASE.to_dict(), "vl_use_prompt": False, "vl_text": "the colours"})
    shared = run_sweep(fresh, SweepSpec("prompt", PROMPTS), fixed, [REF], tmp_path / "s2")
    assert shared.counts["distinct_extractions"] == 1  # the same VL text: one extraction for both prompts


def test_difference_maps():
    black, white = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), "white")
    value, heat = difference(black, black)
    assert value == 0.0 and heat.getextrema() == ((0, 0), (0, 0), (0, 0))
    value, heat = difference(white, black)
    assert value == 1.0 and heat.getpixel((0, 0)) == (255, 255, 255)
    value, heat = difference(Image.new("RGB", (8, 8), (16, 16, 16)), black)
    assert heat.getpixel((0, 0))[0] > 0 and heat.getpixel((0, 0))[2] == 0  # small: red, not yet white


def test_a_sweep_diffs_every_cell_against_the_base(manager, tmp_path):
    sweep = run_sweep(manager, SweepSpec("alpha", "0, 0.5, 1", diff_base=1), BASE, [REF], tmp_path / "s3")
    rows = {r["cell"]: r for r in sweep.rows()}
    assert rows[1]["diff_to_base"] == 0.0 and rows[0]["diff_to_base"] > 0 and rows[2]["diff_to_base"] > 0
    for cell in sweep.finished():
        expected = difference(cell.result.image, sweep.finished()[1].result.image)[0]
        assert rows[cell.index]["diff_to_base"] == round(expected, 4)
    (diff_grid,) = sweep.grids(diff=True)
    assert diff_grid.width == sweep.grids()[0].width  # the same layout (one more title line)
    out = sweep.outputs
    assert any(p.endswith("grids/diff-00.png") for p in out["grids"])
    assert "diff_to_base" in open(out["csv"]).read().splitlines()[0]
    assert "diff_to_base" not in run_sweep(manager, SweepSpec("alpha", "0, 0.5"), BASE, [REF], tmp_path / "s4").rows()[0]


def test_a_base_that_is_not_a_cell_is_refused(manager, tmp_path):
    with pytest.raises(ValueError, match=r"diff_base=3 is not a cell of this sweep: use a cell number from 0 to 2"):
        run_sweep(manager, SweepSpec("alpha", "0, 0.5, 1", diff_base=3), BASE, [REF], tmp_path / "s5")


def test_the_cli_sweep_takes_the_new_axes_and_diff_base(settings, tmp_path, capsys):
    import json
    from pathlib import Path

    from llm_dit.cli import main

    REF.save(tmp_path / "ref.png")
    code = main(["sweep", "--reference", str(tmp_path / "ref.png"), "--prompt", "a boat", "--height", "64",
                 "--width", "64", "--seed", "3", "--x-axis", "vl_end", "--x-values", "0.5, 1", "--diff-base", "1",
                 "--name", "d", "--tiny", "--cache-dir", settings.cache_dir, "--output-dir", str(tmp_path / "out")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and any(Path(p).name == "diff-00.png" for p in out["grids"])
    assert Path(out["folder"]) == tmp_path / "out" / "studies" / "d"  # a study folder: resumable, listed
    rows = json.loads(Path(out["json"]).read_text())["cells"]
    assert [r["vl_end"] for r in rows] == [0.5, 1.0] and rows[1]["diff_to_base"] == 0.0 < rows[0]["diff_to_base"]

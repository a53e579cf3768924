"""Comparison sweeps on the tiny models: cells, counters, equality with single runs, grids, stops."""

import numpy as np
import pytest
from PIL import Image

from llm_dit.studies.compare import SweepSpec, iter_sweep, load_sweeps, run_sweep
from llm_dit.studies.runner import read_info
from llm_dit.pipelines.recipe import vl_generate
from llm_dit.studies.grid import layout
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import VLRequest

REF = Image.new("RGB", (128, 128), (200, 60, 30))
BASE = VLRequest(prompt="a fox in a meadow", height=64, width=64, seed=11)


def pixels(image):
    return np.asarray(image).astype(int)


def test_a_2x3_sweep_runs_each_extraction_and_encode_once(settings, tmp_path):
    fresh = ModelManager(settings)
    sweep = run_sweep(fresh, SweepSpec("blend_mode", "linear, adain", "alpha", "0.2, 0.5, 0.8"), BASE, [REF],
                      tmp_path / "s")
    assert len(sweep.finished()) == 6 and not sweep.stopped
    counts = sweep.counts
    assert counts["distinct_extractions"] == counts["extractions_run"] == 1
    assert counts["distinct_texts"] == counts["encodes_run"] == 1
    assert fresh.load_counts["vl"] == 1
    rows = sweep.rows()
    assert [(r["blend_mode"], r["alpha"]) for r in rows] == [
        ("linear", 0.2), ("adain", 0.2), ("linear", 0.5), ("adain", 0.5), ("linear", 0.8), ("adain", 0.8)]
    assert all(0 <= r["palette_distance"] <= 1 and -1 <= r["ssim"] <= 1 for r in rows)
    first = sweep.finished()[0].result.metadata["timings"]  # the models load before cell 0: the sweep's time
    assert first.get("load", 0.0) == 0.0 and counts["load_seconds"] > 0
    assert rows[0]["seconds_per_cell"] == pytest.approx(first["total"], abs=1e-3)
    assert all(r["extract_seconds"] >= 0 for r in rows)  # its own column, apart from the cell's seconds
    out = sweep.outputs
    assert len(out["grids"]) == 1 and len(out["cells"]) == 6
    assert "blend_mode,alpha" in open(out["csv"]).read().splitlines()[0]
    assert "llm_dit" in Image.open(out["cells"][0]).text
    # a sweep is a study folder: one blended reference set, one seed, the sweep's axes as the study's
    info = read_info(tmp_path / "s")
    assert info["status"] == "finished" and info["study"]["blend"] and info["study"]["seeds"] == [11]
    assert list(info["study"]["axes"]) == ["blend_mode", "alpha"]


def test_cells_equal_single_runs(manager, tmp_path):
    sweep = run_sweep(manager, SweepSpec("alpha", "0, 0.4", "strength", "0.6, 0.9"), BASE, [REF], tmp_path / "s1")
    for cell in sweep.finished():
        single = vl_generate(manager, cell.request, [REF])
        assert np.array_equal(pixels(single.image), pixels(cell.result.image)), cell.coords


def test_batched_cells_match_within_one_level(manager, tmp_path):
    spec = SweepSpec("blend_mode", "linear, linear_rms, adain", "seed", "5, 6")  # each item its own noise
    plain = run_sweep(manager, spec, BASE, [REF], tmp_path / "s2")
    batched = run_sweep(manager, SweepSpec(**{**spec.__dict__, "batch_size": 3}), BASE, [REF], tmp_path / "s3")
    assert {c.result.metadata["batch_size"] for c in batched.finished()} == {3}
    for a, b in zip(plain.finished(), batched.finished()):
        assert np.abs(pixels(a.result.image) - pixels(b.result.image)).max() <= 1


@pytest.mark.parametrize("spec", [SweepSpec("vl_hidden_layer", "-2, -4, -6", "think_block", "off, on"),
                                  SweepSpec("route", "embedding, text", "token_mode", "full, image_only")])
def test_the_vl_model_loads_once_per_sweep(settings, spec, tmp_path):
    fresh = ModelManager(settings)
    sweep = run_sweep(fresh, spec, BASE, [REF], tmp_path / "s4")
    assert fresh.load_counts["vl"] == 1 and not fresh.vl_loaded
    assert sweep.counts["extractions_run"] == sweep.counts["distinct_extractions"] > 1


def test_grid_size_follows_the_axes(manager, tmp_path):
    wide = run_sweep(manager, SweepSpec("alpha", "0, 0.3, 0.6", "seed", "1, 2"), BASE, [REF], tmp_path / "s5").grids()
    tall = run_sweep(manager, SweepSpec("alpha", "0, 0.3", "seed", "1, 2, 3"), BASE, [REF], tmp_path / "s6").grids()
    assert len(wide) == len(tall) == 1
    (ww, wh), (tw, th) = wide[0].size, tall[0].size
    slots = layout((64, 64), "alpha", [0.0, 0.3], "seed", [1, 2]).slots  # cells' places: label-wide columns
    column, row = slots[(0.3, 1)][0] - slots[(0.0, 1)][0], slots[(0.0, 2)][1] - slots[(0.0, 1)][1]
    assert ww - tw == column >= 64 and th - wh == row >= 64  # one more column vs one more row
    z = run_sweep(manager, SweepSpec("alpha", "0, 0.3", "seed", "4", "think_block", "off, on"), BASE, [REF], tmp_path / "s7")
    assert len(z.grids()) == 2 and len(z.finished()) == 4
    assert z.grids()[0].size == z.grids()[1].size


def test_stopping_keeps_the_finished_cells(manager, tmp_path):
    gen = iter_sweep(manager, SweepSpec("alpha", "0, 0.2, 0.4, 0.6"), BASE, [REF], tmp_path / "g")
    first = next(gen)
    gen.close()  # what a UI cancel does: stop after the current cell
    assert len(first.finished()) == 1
    asked = []

    def stop():  # asked before each cell: says stop at the third
        asked.append(1)
        return len(asked) > 2

    sweep = run_sweep(manager, SweepSpec("alpha", "0, 0.2, 0.4, 0.6"), BASE, [REF], tmp_path / "s10", should_stop=stop)
    assert sweep.stopped and len(sweep.finished()) == 2 and sweep.counts["finished"] == 2


def test_text_route_captions_once(manager, tmp_path):
    sweep = run_sweep(manager, SweepSpec("route", "embedding, text", "alpha", "0.3, 0.6"), BASE, [REF], tmp_path / "s8")
    text_cells = [c for c in sweep.finished() if c.route == "text"]
    assert len(text_cells) == 2 and sweep.caption
    assert all("The image's look:" in c.result.metadata["request"]["prompt"] for c in text_cells)
    assert all(c.result.metadata["mode"] == "img2img" for c in text_cells)
    assert all(c.result.metadata["route"] == "text" and c.result.metadata["caption"] == sweep.caption
               for c in text_cells)


@pytest.mark.parametrize("spec,refs,message", [
    (SweepSpec("", ""), [REF], r"x_axis is empty"),
    (SweepSpec("colour", "red"), [REF], r"x_axis='colour' is unknown"),
    (SweepSpec("blend_mode", "linear, overlay"), [REF], r"axis 'blend_mode': blend_mode='overlay' is not one of"),
    (SweepSpec("alpha", "0, 1.5"), [REF], r"axis 'alpha': alpha=1.5 is out of range"),
    (SweepSpec("alpha", "0, 0.5", "alpha", "0.1"), [REF], r"axis 'alpha' is used twice"),
    (SweepSpec("alpha", ""), [REF], r"axis 'alpha' has no values"),
    (SweepSpec("alpha", "0, 0"), [REF], r"axis 'alpha' repeats a value"),
    (SweepSpec("seed", ",".join(map(str, range(9))), "alpha", "0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7"), [REF],
     r"the sweep has 72 cells, more than cell_limit=64"),
    (SweepSpec("alpha", "0, 0.5"), [], r"references: no reference image"),
    (SweepSpec("alpha", "0, 0.5", z_axis="seed", z_values="1, 2"), [REF], r"z_axis is set but y_axis is empty"),
])
def test_bad_sweeps_are_refused_before_anything_runs(settings, spec, refs, message, tmp_path):
    fresh = ModelManager(settings)
    with pytest.raises(ValueError, match=message):
        run_sweep(fresh, spec, BASE, refs, tmp_path / "s")
    assert not fresh.is_loaded and fresh.load_counts["vl"] == 0


def test_sweep_presets_are_valid():
    presets = load_sweeps()
    assert {"Style transfer", "Blend comparison", "Layer sweep", "Token selection", "Outlier masking",
            "Think block", "VL vs Qwen3", "Prompt variations"} <= set(presets)
    for preset in presets.values():
        assert SweepSpec(**preset["spec"]).axes()


def test_each_reference_of_a_blend_gets_its_own_score(manager, tmp_path):
    from llm_dit.studies.metrics import palette_distance

    other = Image.new("RGB", (128, 128), (20, 40, 220))
    base = VLRequest(prompt="a fox in a meadow", height=64, width=64, seed=11, reference_weights="1, 3")
    sweep = run_sweep(manager, SweepSpec("alpha", "0.3"), base, [REF, other], tmp_path / "s9")
    (row,), image = sweep.rows(), sweep.finished()[0].result.image
    own = [round(palette_distance(image, r), 4) for r in (REF, other)]
    assert [row["palette_distance_ref0"], row["palette_distance_ref1"]] == own and own[0] != own[1]
    assert row["palette_distance"] == pytest.approx((own[0] + 3 * own[1]) / 4, abs=1e-4)


def test_two_uploads_of_the_same_name_are_both_references(tmp_path):
    """Two uploads are often both `image.png`: a sweep blends them, each labelled apart."""
    from llm_dit.studies.compare import store_references

    paths = []
    for i, colour in enumerate([(200, 60, 30), (20, 40, 220)]):
        (tmp_path / str(i)).mkdir()
        Image.new("RGB", (32, 32), colour).save(tmp_path / str(i) / "image.png")
        paths.append(str(tmp_path / str(i) / "image.png"))
    refs = store_references(paths + [paths[0]], tmp_path / "store")
    assert [r.name for r in refs] == ["image.png", "image (2).png", "image (3).png"]
    assert refs[0].sha256 == refs[2].sha256 != refs[1].sha256

"""Studies on the tiny models: a study folder is a `datasets` imagefolder; summary, plots, resume,
rerun, refusals; two accelerate processes give the one-process study."""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from llm_dit.cli import main
from llm_dit.runtime.models import ModelManager
from llm_dit.studies.distributed import launch_command
from llm_dit.studies.runner import create, read_info, run_cells, run_study
from llm_dit.studies.study import file_sha256, load_study, parse_study
from llm_dit.studies.summary import figure, read_summary

ROOT = Path(__file__).resolve().parent.parent
STUDY = """name = "two refs"
references = "refs"
seeds = [1, 2]
[axes]
alpha = [0.2, 0.6]
[base]
prompt = "a lighthouse"
height = 64
width = 64
num_inference_steps = 2
"""
TIMING = {"extract_seconds", "generate_seconds", "batch_seconds"}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def study_file(root: Path) -> Path:
    (root / "refs").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 60, 30)).save(root / "refs" / "house.png")
    Image.new("RGB", (64, 64), (30, 60, 200)).save(root / "refs" / "noir.png")
    (root / "study.toml").write_text(STUDY)
    return root / "study.toml"


def cli(settings, *args) -> int:
    return main([*args, "--tiny", "--cache-dir", settings.cache_dir])


@pytest.fixture(scope="module")
def finished(manager, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    folder = root / "out"
    *_, summary = run_study(manager, load_study(study_file(root)), folder)
    return root, folder, summary


def test_a_study_folder_loads_with_datasets(finished):
    root, folder, summary = finished
    assert summary["status"] == "finished" and summary["finished"] == 8
    rows = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert rows.num_rows == 8 and rows[0]["image"].size == (64, 64)
    sha = {name: file_sha256(root / "refs" / name) for name in ("house.png", "noir.png")}
    got = sorted((r["reference"], r["alpha"], r["seed"]) for r in rows)
    assert got == sorted((ref, a, s) for ref in sha for a in (0.2, 0.6) for s in (1, 2))
    for row in rows:
        assert row["reference_sha256"] == sha[row["reference"]]
        assert (row["prompt"], row["height"], row["num_inference_steps"], row["blend_mode"]) == \
            ("a lighthouse", 64, 2, "linear")  # every fixed field, the defaults too
        assert 0 < row["vl_share"] < 1 and row["generate_seconds"] > 0 and row["warnings"] == []
    info = read_info(folder)
    assert info["study"]["seeds"] == [1, 2] and info["base_request"]["prompt"] == "a lighthouse"
    assert info["models"]["z_image"]["folder_sha256"] and "diffusers" in info["versions"]
    assert info["runs"][0]["per_process"][0]["load_seconds"]["z_image"] >= 0 and info["memory_plan"]


def test_summary_aggregates_the_seeds_and_the_plots_are_its_data(finished, settings, tmp_path):
    _, folder, summary = finished
    config, values, table = read_summary(folder / "summary.csv")
    assert config == ["reference", "alpha"] and len(table) == 4 and {r["n"] for r in table} == {"2"}
    cells = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    first = [c["ssim"] for c in cells if c["reference"] == "house.png" and c["alpha"] == 0.2]
    row = next(r for r in table if r["reference"] == "house.png" and r["alpha"] == "0.2")
    assert float(row["ssim_mean"]) == pytest.approx(np.mean(first), abs=1e-6)
    assert float(row["ssim_sd"]) == pytest.approx(np.std(first, ddof=1), abs=1e-6)
    assert {"vl_share", "ssim", "palette_distance"} <= set(values)
    assert sorted(Path(p).name for p in summary["plots"]) == sorted(f"{v}-vs-alpha.png" for v in values)
    bars = figure(config, table, "ssim", "alpha").axes[0].containers  # one errorbar line per reference
    plotted = {tuple(bar.lines[0].get_ydata()) for bar in bars}
    assert plotted == {tuple(float(r["ssim_mean"]) for r in table if r["reference"] == ref)
                       for ref in ("house.png", "noir.png")}
    # `study plot` needs summary.csv alone and draws the same pictures
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "summary.csv", alone)
    shutil.copy(folder / "study.json", alone)
    assert cli(settings, "study", "plot", str(alone)) == 0
    for path in summary["plots"]:
        assert np.array_equal(pixels(path), pixels(alone / "plots" / Path(path).name))


def test_one_grid_per_reference(finished):
    _, folder, summary = finished
    assert [Path(g).name for g in summary["grids"]] == ["grid-00-00.png", "grid-01-00.png"]
    assert Image.open(summary["grids"][0]).size[0] > 2 * 64  # two columns and labels


def test_rerun_is_bit_identical_and_an_existing_folder_is_refused(finished, settings, capsys):
    root, folder, _ = finished
    assert cli(settings, "study", "rerun", str(folder), "--cell", "5") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["identical"] and np.array_equal(pixels(out["rerun"]), pixels(folder / "cells" / "cell0005.png"))
    before = sorted(p.name for p in folder.rglob("*"))
    assert cli(settings, "study", "run", str(root / "study.toml"), "--output-dir", str(folder)) == 2
    assert "study resume" in capsys.readouterr().err
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_a_killed_study_resumes_without_touching_finished_cells(finished, manager, settings, tmp_path):
    root, full, _ = finished
    folder = tmp_path / "killed"
    study = load_study(root / "study.toml")
    create(manager, study, folder)
    run = run_cells(manager, study, folder)
    for _ in range(3):
        next(run)
    run.close()  # killed after three cells, and mid-way through writing the fourth's row and PNG
    with open(folder / "progress" / "rows-0.jsonl", "a") as f:
        f.write('{"file_name": "cells/cell0003.png", "cell": 3, "ref')
    Image.new("RGB", (64, 64)).save(folder / "cells" / "cell0003.png")
    kept = {p.name: p.stat().st_mtime_ns for p in (folder / "cells").glob("*.png") if p.name != "cell0003.png"}
    assert len(kept) == 3 and read_info(folder)["status"] == "running"
    assert cli(settings, "study", "resume", str(folder)) == 0
    assert {n: (folder / "cells" / n).stat().st_mtime_ns for n in kept} == kept
    assert read_info(folder)["status"] == "finished"
    for i in range(8):
        name = f"cell{i:04d}.png"
        assert np.array_equal(pixels(folder / "cells" / name), pixels(full / "cells" / name)), name
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in rows] == list(range(8)) and not (folder / "progress").exists()


@pytest.mark.parametrize("change,message", [
    ({"axes": {"colour": ["red"]}}, r"axes.colour is not a request field"),
    ({"axes": {"alpha": [0.2, 1.5]}}, r"axes.alpha: alpha=1.5 is out of range"),
    ({"axes": {"blend_mode": ["linear", "overlay"]}}, r"axes.blend_mode: blend_mode='overlay' is not one of"),
    ({"axes": {"seed": [1, 2]}}, r"seeds are replicates"),
    ({"base": {"steps": 4}}, r"base.steps is not a request field"),
    ({"base": {"prompt": "x", "height": 70}}, r"cell 0 \(alpha=0.2\): height=70 is not a multiple of 16"),
    ({"seeds": [1, 1]}, r"repeats a seed"),
    ({"references": "nowhere"}, r"references='nowhere' is not a folder"),
    ({"metrics": ["style_similarity"]}, r"needs a scoring model: start with --metrics-model"),
    ({"axes": {"route": ["text"]}, "captioner": {"backend": "nope"}}, r"captioner: backend='nope' is unknown"),
    ({"captioner": {"colour": "red"}}, r"captioner=\{'colour': 'red'\}: give a table of rewrite fields"),
])
def test_bad_studies_are_refused_before_anything_runs(settings, tmp_path, change, message):
    study_file(tmp_path)
    data = {"references": "refs", "seeds": [1], "axes": {"alpha": [0.2]}, "base": {"prompt": "x"}}
    data.update(change)
    fresh = ModelManager(settings)
    with pytest.raises(ValueError, match=message):
        study = parse_study(data, tmp_path)
        create(fresh, study, tmp_path / "out")
    assert not fresh.is_loaded and not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_study(settings, tmp_path):
    study_file(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    outs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        done = subprocess.run(launch_command(processes, _free_port()) + [
            "study", "run", str(tmp_path / "study.toml"), "--output-dir", str(out), "--tiny",
            "--cache-dir", settings.cache_dir], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[processes] = json.loads(done.stdout)
    assert [c["finished"] for c in read_info(tmp_path / "p2")["runs"][0]["per_process"]] == [4, 4]
    rows = {p: [{k: v for k, v in json.loads(line).items() if k not in TIMING}
                for line in (tmp_path / f"p{p}" / "metadata.jsonl").read_text().splitlines()] for p in (1, 2)}
    assert rows[1] == rows[2] and len(rows[1]) == 8
    for i in range(8):
        name = f"cells/cell{i:04d}.png"
        assert np.array_equal(pixels(tmp_path / "p1" / name), pixels(tmp_path / "p2" / name)), name


def test_every_study_preset_runs_over_given_references(tmp_path):
    study_file(tmp_path)
    presets = sorted((ROOT / "presets" / "studies").glob("*.toml"))
    assert len(presets) >= 11
    for path in presets:
        with pytest.raises(ValueError, match="--references on the command line"):
            load_study(path)  # a preset names no references: the run gives them
        study = load_study(path, references=[str(tmp_path / "refs")], base={"prompt": "a house", "height": 64})
        cells = study.check()
        assert len(cells) == 2 * len(study.seeds) * np.prod([len(v) for _, v in study.axes]), path.name
        assert all(c.request.prompt == "a house" and c.request.height == 64 for c in cells)
        if "vl_text" in dict(study.axes):  # VL reads the text on the axis, not the prompt
            assert not any(c.request.vl_use_prompt for c in cells)


def test_written_files_follow_the_umask(finished):
    from llm_dit.serving.outputs import UMASK

    _, folder, _ = finished
    for path in [folder / "cells" / "cell0000.png"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK  # not a temp file's 0600


def test_scan_many_references_into_a_folder(settings, tmp_path, capsys):
    import csv

    study_file(tmp_path)
    out = tmp_path / "scan"
    assert cli(settings, "scan", "--reference", str(tmp_path / "refs"), "--output-dir", str(out)) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(open(out / "scan.csv")))
    assert {r["reference"] for r in rows} == {"house.png", "noir.png"}
    assert {r["reference_sha256"] for r in rows} == {file_sha256(tmp_path / "refs" / n) for n in ("house.png", "noir.png")}
    for row in rows:  # the ratio relative to the median dimension, and the raw max / min std
        assert float(row["std_ratio_raw"]) >= 1 and float(row["outlier_ratio"]) > 0
    assert sorted(Path(p).name for p in summary["plots"]) == sorted(
        f"{v}-{t}.png" for v in ("std_correlation", "outlier_dims", "outlier_ratio", "std_ratio_raw")
        for t in ("image", "text"))
    assert set(summary["best_layer"]) == {"house.png", "noir.png"}
    assert [r["name"] for r in json.loads((out / "scan.json").read_text())["references"]] == ["house.png", "noir.png"]
    assert cli(settings, "scan", "--reference", str(tmp_path / "refs"), "--output-dir", str(out)) == 2


def test_the_text_route_is_labelled_and_made_once_per_distinct_caption(manager, tmp_path):
    study_file(tmp_path)
    data = {"references": ["refs/house.png"], "seeds": [4], "axes": {"route": ["embedding", "text"],
                                                                   "alpha": [0.2, 0.6]},
            "base": {"prompt": "a lighthouse", "height": 64, "width": 64, "num_inference_steps": 2}}
    *_, summary = run_study(manager, parse_study(data, tmp_path), tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    text = [r for r in rows if r["route"] == "text"]
    assert summary["finished"] == 4 and len(text) == 2 and all(r["vl_share"] == 0.0 for r in text)
    metas = [json.loads(Image.open(tmp_path / "out" / r["file_name"]).text["llm_dit"]) for r in text]
    assert all(m["route"] == "text" and "The image's look:" in m["request"]["prompt"] for m in metas)
    # alpha means nothing to the caption route: one generation serves both of its cells
    assert metas[0]["timeline"] == metas[1]["timeline"]
    assert np.array_equal(pixels(tmp_path / "out" / text[0]["file_name"]), pixels(tmp_path / "out" / text[1]["file_name"]))


def test_a_hosted_visitor_lists_only_their_own_studies(manager, tmp_path):
    from llm_dit.studies.runner import list_studies

    study = load_study(study_file(tmp_path / "files"))
    create(manager, study, tmp_path / "studies" / "mine", session="session-a")
    create(manager, study, tmp_path / "studies" / "cli")  # from the command line: no session
    root = tmp_path / "studies"
    assert [s["name"] for s in list_studies(root, "session-a")] == ["mine"]
    assert list_studies(root, "session-b") == list_studies(root, "") == []  # no session: none
    assert len(list_studies(root)) == 2  # locally: every study
    assert "session-a" not in (root / "mine" / "study.json").read_text()  # the id itself is never written
    assert list_studies(root)[0]["cells"] == "0 / 8" and list_studies(root)[0]["status"] == "running"


def test_each_cell_is_scored_against_its_own_reference(settings, tmp_path):
    from dataclasses import replace

    from llm_dit.runtime.tiny import ensure_tiny_clip

    study_file(tmp_path)
    scored = ModelManager(replace(settings, metrics_model=str(ensure_tiny_clip(cache_dir=settings.cache_dir))))
    data = {"references": "refs", "seeds": [3], "axes": {"alpha": [0.5]},
            "base": {"prompt": "a lighthouse", "height": 64, "width": 64, "num_inference_steps": 2}}
    *_, summary = run_study(scored, parse_study(data, tmp_path, scorer=True), tmp_path / "out")
    scorer, refs = scored.scorer(), {n: Image.open(tmp_path / "refs" / n) for n in ("house.png", "noir.png")}
    for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        image = Image.open(tmp_path / "out" / row["file_name"])
        own = scorer.score(image, refs[row["reference"]], "a lighthouse")
        other = scorer.score(image, refs[({"house.png", "noir.png"} - {row["reference"]}).pop()], "a lighthouse")
        assert row["style_similarity"] == own["style_similarity"] != other["style_similarity"]
        assert row["prompt_similarity"] == own["prompt_similarity"]
    assert "style_similarity_mean" in read_summary(Path(summary["summary"]))[2][0]


def test_controlnet_settings_and_the_inpaint_mask_are_study_axes(settings, tmp_path):
    """A study names a control image (or a mask) once, hashed like a reference; the ControlNet's
    scale and window are then axes that change the cells, and scale 0 is the cell without it."""
    from dataclasses import replace as with_

    from PIL import ImageDraw

    from llm_dit.runtime.tiny import ensure_tiny_controlnet

    controlled = ModelManager(with_(settings, controlnet_path=str(ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir))))
    square = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(square).rectangle((16, 16, 47, 47), fill="white")
    square.save(tmp_path / "layout.png")
    Image.new("RGB", (64, 64), (200, 60, 30)).save(tmp_path / "ref.png")
    data = {"references": ["ref.png"], "seeds": [1], "control_image": "layout.png",
            "axes": {"controlnet_conditioning_scale": [0.0, 0.75], "control_guidance_end": [0.5, 1.0]},
            "base": {"prompt": "a box", "height": 64, "width": 64, "num_inference_steps": 4, "alpha": 0.0,
                     "strength": 1.0}}
    *_, summary = run_study(controlled, parse_study(data, tmp_path), tmp_path / "out")
    assert summary["finished"] == 4
    info = read_info(tmp_path / "out")
    assert info["study"]["control_image"]["sha256"] == file_sha256(tmp_path / "layout.png")
    cells = [pixels(tmp_path / "out" / "cells" / f"cell{i:04d}.png") for i in range(4)]
    # cells: (scale 0, end 0.5), (0.75, 0.5), (0, 1), (0.75, 1): scale 0 is the same whatever the window
    assert np.array_equal(cells[0], cells[2])
    assert not np.array_equal(cells[1], cells[0]) and not np.array_equal(cells[3], cells[1])
    meta = json.loads(Image.open(tmp_path / "out" / "cells" / "cell0003.png").text["llm_dit"])
    assert meta["control"]["steps"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"controlnet_conditioning_scale does nothing without a control image"):
        parse_study({**data, "control_image": ""}, tmp_path).check()
    with pytest.raises(ValueError, match=r"mask_image: inpainting redraws part of an init image"):
        parse_study({**data, "axes": {"guidance_scale": [0.0]}, "control_image": "", "mask_image": "layout.png"},
                    tmp_path).check()


def test_a_cancelled_study_says_stopped_and_can_be_pruned(finished, manager, tmp_path):
    """A study cancelled mid-way (a client gone, Stop) keeps its finished cells and says `stopped`,
    not `running` for ever: the list counts its cells, --output-keep may prune it, resume finishes it."""
    import threading

    from llm_dit.serving import cancel
    from llm_dit.serving.outputs import OutputFolder
    from llm_dit.studies.runner import list_studies, resume

    root, _, _ = finished
    out = tmp_path / "outputs"
    outputs = OutputFolder(str(out), keep=1)  # study folders are pruned only under names the app gives
    folder = out / "studies" / outputs.stem("study")
    stop = threading.Event()
    with cancel.scope(stop), pytest.raises(cancel.Cancelled):
        for done, _ in enumerate(run_study(manager, load_study(root / "study.toml"), folder), 1):
            if done == 2:
                stop.set()
    assert read_info(folder)["status"] == "stopped"
    (listed,) = list_studies(out / "studies")
    assert listed["status"] == "stopped" and listed["cells"] == "2 / 8"
    *_, summary = resume(manager, folder)
    assert summary["status"] == "finished" and summary["finished"] == 8
    copies = {}
    for status in ("stopped", "running"):
        copies[status] = out / "studies" / outputs.stem("study")
        shutil.copytree(folder, copies[status])
        (copies[status] / "study.json").write_text(
            (folder / "study.json").read_text().replace('"finished"', f'"{status}"'))
    outputs.prune()  # stopped or finished: done, so pruned; running: kept
    assert sorted((out / "studies").iterdir()) == [copies["running"]]

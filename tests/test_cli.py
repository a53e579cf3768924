"""The command line: flags from the request fields, a JSON summary, exit codes, --from-png."""

import json
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from llm_dit.cli import build_parser, main
from llm_dit.core.request import GenerationRequest, RewriteRequest, VLRequest, field_help

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(settings, tmp_path, capsys):
    """`llm-dit ARGS` in-process on the tiny models: (exit code, parsed stdout, stderr)."""
    def call(*args):
        code = main([*args, "--tiny", "--cache-dir", settings.cache_dir, "--output-dir", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err
    return call


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _help(command: str) -> str:
    sub = build_parser([command])._subparsers._group_actions[0].choices[command]
    return "".join(sub.format_help().split())  # argparse wraps lines (also at hyphens)


@pytest.mark.parametrize("command,cls,leave_out", [("generate", GenerationRequest, {"strength"}),
                                                   ("img2img", GenerationRequest, set()), ("vl", VLRequest, set()),
                                                   ("sweep", VLRequest, set()), ("rewrite", RewriteRequest, set())])
def test_every_request_field_is_a_flag_with_its_declared_range_and_default(command, cls, leave_out):
    text = _help(command)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        assert (flag in text) == (f.name not in leave_out), flag
        if f.name not in leave_out:
            assert "".join(field_help(f.name, cls).split()) in text
    assert "--model-path" in text and "--text-encoder-url" in text  # the app's settings flags


def test_generate_then_regenerate_from_the_png(run):
    code, first, err = run("generate", "--prompt", "a red fox", "--height", "64", "--width", "64", "--seed", "5",
                           "--num-inference-steps", "4", "--strip-quotes")
    assert code == 0 and first["seed"] == 5 and first["forwards"] == 4 and "txt2img" in err  # the bar, on stderr
    code, again, _ = run("generate", "--from-png", first["image"])
    assert code == 0 and again["seed"] == 5 and again["image"] != first["image"]
    assert np.array_equal(_pixels(again["image"]), _pixels(first["image"]))
    assert {"prompt", "seed", "num_inference_steps", "strip_quotes"} <= set(again["from_png"]["used"])
    code, other, _ = run("generate", "--from-png", first["image"], "--seed", "6")  # a flag given wins
    assert other["seed"] == 6 and not np.array_equal(_pixels(other["image"]), _pixels(first["image"]))


@pytest.mark.parametrize("args,message", [
    (["--prompt", "x", "--height", "65"], "height=65 is not a multiple of 16: use 64 or 80."),
    (["--prompt", "", "--height", "64"], "prompt is empty"),
    (["--prompt", "x", "--num-inference-steps", "101"], "num_inference_steps=101 is out of range"),
    (["--prompt", "x", "--template", "No such style"], "No such style"),
])
def test_bad_input_exits_2_with_the_apps_message(run, args, message):
    code, out, err = run("generate", *args)
    assert code == 2 and out is None and message in err


def test_unparsable_flags_exit_2_naming_the_field(run):
    with pytest.raises(SystemExit) as exit_info:
        run("generate", "--prompt", "x", "--height", "tall")
    assert exit_info.value.code == 2


def test_a_png_without_parameters_is_bad_input(run, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    code, _, err = run("generate", "--from-png", str(tmp_path / "plain.png"))
    assert code == 2 and "no generation metadata" in err


def test_a_model_that_cannot_load_is_a_failure_exit_1(settings, tmp_path, capsys):
    code = main(["generate", "--prompt", "x", "--height", "64", "--width", "64", "--model-path",
                 str(tmp_path / "missing"), "--output-dir", str(tmp_path)])
    assert code == 1 and "Could not load the Z-Image checkpoint" in capsys.readouterr().err


def test_img2img_vl_and_extract(run, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "ref.png")
    ref = str(tmp_path / "ref.png")
    code, out, _ = run("img2img", "--image", ref, "--prompt", "a boat", "--height", "64", "--width", "64",
                       "--strength", "0.5", "--seed", "2")
    assert code == 0 and out["mode"] == "img2img" and out["forwards"] == 4
    code, out, _ = run("vl", "--reference", ref, "--prompt", "a boat", "--height", "64", "--width", "64",
                       "--alpha", "0.5", "--seed", "2")
    assert code == 0 and out["mode"] == "vl" and 0 < out["effective_alpha"] <= 1
    assert json.loads(Image.open(out["image"]).text["llm_dit"])["request"]["alpha"] == 0.5
    code, again, _ = run("vl", "--reference", ref, "--from-png", out["image"])
    assert np.array_equal(_pixels(again["image"]), _pixels(out["image"])) and again["from_png"]["mismatches"] == []
    Image.new("RGB", (64, 64), (20, 200, 30)).save(tmp_path / "other.png")
    code, other, err = run("vl", "--reference", str(tmp_path / "other.png"), "--from-png", out["image"])
    assert [m.split(" ")[:2] for m in other["from_png"]["mismatches"]] == [["references", "differ"], ["the", "init"]]
    assert "warning: references differ from the PNG's" in err
    code, out, _ = run("extract", "--reference", ref, "--prompt", "a boat", "--output", str(tmp_path / "c.safetensors"))
    assert code == 0 and out["conditioning"] == str(tmp_path / "c.safetensors") and out["warnings"] == []
    with safe_open(out["conditioning"], "pt") as f:
        assert list(f.get_tensor("prompt_embeds").shape) == out["prompt_embeds_shape"]
    code, _, err = run("vl", "--reference", str(tmp_path / "missing.png"), "--prompt", "a boat")
    assert code == 2 and "references[0]" in err


def test_sweep_writes_the_grid_table_and_cells(run, tmp_path):
    Image.new("RGB", (64, 64), (30, 30, 200)).save(tmp_path / "ref.png")
    code, out, err = run("sweep", "--reference", str(tmp_path / "ref.png"), "--prompt", "a boat", "--height", "64",
                         "--width", "64", "--seed", "3", "--x-axis", "alpha", "--x-values", "0, 0.5",
                         "--y-axis", "blend_mode", "--y-values", "linear, adain", "--name", "run1")
    assert code == 0 and "study (process 1/1)" in err  # a sweep is a study: <output dir>/studies/run1/
    assert [Path(p).name for p in out["cells"]] == [f"cell000{i}.png" for i in range(4)]
    assert Path(out["folder"]).name == "run1" and Path(out["folder"]).parent.name == "studies"
    assert Path(out["grids"][0]).name == "sweep-00.png" and out["counts"]["extractions_run"] == 1
    rows = json.loads(Path(out["json"]).read_text())["cells"]
    assert [(r["alpha"], r["blend_mode"]) for r in rows] == [(0.0, "linear"), (0.5, "linear"), (0.0, "adain"),
                                                             (0.5, "adain")]
    code, _, err = run("sweep", "--reference", str(tmp_path / "ref.png"), "--prompt", "x", "--x-axis", "alpha",
                       "--x-values", "0, 2")
    assert code == 2 and "axis 'alpha': alpha=2.0 is out of range" in err
    code, _, err = run("sweep", "--reference", str(tmp_path / "ref.png"), "--prompt", "x", "--name", "run1")
    assert code == 2 and "run1 exists: choose another name, or `llm-dit study resume" in err


def test_rewrite_and_info(run):
    code, out, _ = run("rewrite", "--prompt", "a cat", "--max-new-tokens", "16", "--seed", "1")
    assert code == 0 and isinstance(out["text"], str) and out["seed"] == 1
    code, out, _ = run("info")
    assert code == 0 and out["settings"]["tiny"] and out["devices"]["cpu"] and "torch" in out["versions"]
    assert out["hosting"].startswith("local")


def test_python_dash_m_and_the_console_script(settings, tmp_path):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"llm-dit": "llm_dit.cli:main"}
    done = subprocess.run([sys.executable, "-m", "llm_dit", "info", "--tiny", "--cache-dir", settings.cache_dir,
                           "--vl-url", "http://127.0.0.1:9/"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["settings"]["vl_url"] == "http://127.0.0.1:9/"
    assert "torchao" not in done.stderr and "_pytree" not in done.stderr, done.stderr  # nothing quantized
    done = subprocess.run([sys.executable, "-m", "llm_dit", "info", "--vl-url", "ftp://x"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "vl_url='ftp://x' is not an http(s) URL" in done.stderr

"""Z-Image (Base) recognised from the checkpoint's own configs, not only its name: a tiny checkpoint
in a renamed folder with Base's scheduler (shift 6) switches the defaults, the readouts and the
advice; Turbo's shift keeps Turbo's; the repo id save_pretrained records wins over the shift; the
user's --model-variant wins over both."""

import json
import shutil
from dataclasses import replace

import pytest

from llm_dit.core.variants import BASE_NEGATIVE
from llm_dit.pipelines.generate import txt2img
from llm_dit.runtime import checkpoints
from llm_dit.runtime.models import ModelManager

from .conftest import small


def _copy(zimage_dir, folder, shift=None, saved_from=None):
    shutil.copytree(zimage_dir, folder)
    if shift is not None:
        config = folder / "scheduler" / "scheduler_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "shift": shift}))
    if saved_from is not None:
        index = folder / "model_index.json"
        index.write_text(json.dumps({**json.loads(index.read_text()), "_name_or_path": saved_from}))
    return folder


@pytest.fixture(scope="module")
def renamed_base(zimage_dir, tmp_path_factory):
    """Base's configs in a folder whose name says nothing (a user's copy, a mirror)."""
    return _copy(zimage_dir, tmp_path_factory.mktemp("models") / "my-checkpoint", shift=6.0)


@pytest.mark.parametrize("name, shift, saved_from, variant", [
    ("my-checkpoint", 6.0, None, "base"),
    ("my-checkpoint", 3.0, None, "turbo"),
    ("my-checkpoint", 4.5, None, "turbo"),  # a shift neither release has: Turbo unless told
    ("Z-Image", 4.5, None, "base"),  # then the folder's name
    ("Z-Image-Turbo", 6.0, None, "base"),  # the configs win over the folder's name
    ("my-checkpoint", 4.5, "/hub/models--Tongyi-MAI--Z-Image/snapshots/04cc4ab", "base"),
    ("my-checkpoint", 6.0, "Tongyi-MAI/Z-Image-Turbo", "turbo"),  # the repo it was saved from wins over the shift
])
def test_the_variant_is_read_from_the_configs(zimage_dir, tmp_path, name, shift, saved_from, variant):
    folder = _copy(zimage_dir, tmp_path / name, shift, saved_from)
    assert checkpoints.detect_variant(str(folder), "auto", folder) == variant
    other = {"base": "turbo", "turbo": "base"}[variant]
    assert checkpoints.detect_variant(str(folder), other, folder) == other  # the user's setting wins


def test_a_renamed_base_checkpoint_switches_defaults_advice_and_readouts(settings, renamed_base):
    from ui import build_demo

    base = ModelManager(replace(settings, tiny=False, model_path=str(renamed_base)))
    assert base.variant == "base"
    assert base.request_defaults() == {"num_inference_steps": 28, "guidance_scale": 4.0,
                                       "negative_prompt": BASE_NEGATIVE, "shift": 6.0}
    unguided = txt2img(base, small(num_inference_steps=2))
    assert unguided.metadata["checkpoint"]["variant"] == "base"
    assert any("guidance_scale=0 on Z-Image Base" in w for w in unguided.metadata["warnings"])
    demo = build_demo(replace(settings, tiny=False, model_path=str(renamed_base)))
    props = [c["props"] for c in demo.config["components"]]
    negative = [p for p in props if p.get("label", "").lower().startswith("negative")]
    assert negative and all(p["value"] == BASE_NEGATIVE for p in negative)
    readouts = {p.get("elem_id"): p["value"] for p in props if p.get("elem_id", "").endswith("readout")}
    assert readouts["img2img-readout"].startswith("25 of 28 forwards")  # strength 0.9 of 28 steps, not 7 of 8


def test_the_override_keeps_turbo_on_base_configs(settings, renamed_base):
    forced = ModelManager(replace(settings, tiny=False, model_path=str(renamed_base), model_variant="turbo"))
    assert forced.variant == "turbo" and forced.request_defaults() == {"shift": 6.0}
    assert not txt2img(forced, small(num_inference_steps=2)).metadata["warnings"]

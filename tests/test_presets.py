"""Presets are data, checked against the request fields and their ranges."""

import pytest

from llm_dit.pipelines.generate import img2img_plan
from llm_dit.core.presets import load_presets
from llm_dit.core.request import GenerationRequest, validate


def test_shipped_presets_are_valid_requests():
    presets = load_presets()
    assert "Turbo (8 steps)" in presets and len(presets) >= 4
    for name, preset in presets.items():
        validate(GenerationRequest(prompt="x", height=64, width=64, **preset["values"]), img2img=True)
        assert preset["description"], name


def test_style_transfer_preset_is_the_brief_recipe():
    values = load_presets()["Style transfer img2img"]["values"]
    plan = img2img_plan(values["num_inference_steps"], values["strength"], values["shift"])
    assert plan["forwards"] == 7 and plan["start_sigma"] == pytest.approx(0.955, abs=1e-3)


@pytest.mark.parametrize("body,message", [
    ('["x"]\nsampler = "dpm"\n', r"preset 'x' .*unknown field\(s\) \['sampler'\]"),
    ('["x"]\nnum_inference_steps = 0\n', r"preset 'x' .*num_inference_steps=0 is out of range"),
    ('["x"\nshift = 3\n', r"presets file .*bad.toml: .*line 1"),
])
def test_bad_preset_files_name_the_fault(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_presets(path)

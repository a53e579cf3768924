"""Parameters from a PNG: ours round-trip, A1111's map, and what cannot be used is listed."""

import json

import pytest
from PIL import Image, PngImagePlugin

from llm_dit.pipelines.generate import txt2img
from llm_dit.core.pnginfo import read_parameters

from .conftest import small


def _png(tmp_path, **chunks):
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    path = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_our_png_round_trips(manager, tmp_path):
    result = txt2img(manager, small(template="Art deco", shift=4.5))
    params = read_parameters(result.save(tmp_path))
    assert params.source == "llm_dit" and params.mode == "txt2img" and not params.unknown and not params.problems
    assert params.request() == small(template="Art deco", shift=4.5, seed=result.seed)


def test_a1111_chunk_maps_and_reports_the_rest(tmp_path):
    text = ("a castle\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 3.5, Seed: 99, "
            "Size: 768x512, Model hash: abc123, Denoising strength: 0.6, Lora hashes: \"x: 1\"")
    params = read_parameters(_png(tmp_path, parameters=text))
    assert params.mode == "img2img" and params.source == "a1111"
    assert params.values == {"prompt": "a castle", "negative_prompt": "blurry", "num_inference_steps": 20,
                             "guidance_scale": 3.5, "seed": 99, "width": 768, "height": 512, "strength": 0.6}
    assert set(params.unknown) == {"Sampler", "Model hash", "Lora hashes"}
    assert "Not used (not parameters of this app): Sampler: DPM++ 2M" in params.report()


def test_out_of_range_values_are_listed_not_used(tmp_path):
    text = "a castle\nSteps: 500, CFG scale: 3.5, Seed: 1, Size: 770x512"
    params = read_parameters(_png(tmp_path, parameters=text))
    assert "num_inference_steps" not in params.values and params.values["guidance_scale"] == 3.5
    assert any("num_inference_steps=500 is out of range" in p for p in params.problems)
    assert "width" in params.values  # 770 is in range; the multiple-of-16 rule is checked when generating
    ours = {"mode": "txt2img", "request": {"prompt": "x", "alpha": 7, "blend_mode": "warp", "sampler": "a"}}
    params = read_parameters(_png(tmp_path, llm_dit=json.dumps(ours)))
    assert params.unknown == {"sampler": "a"}
    assert len(params.problems) == 2 and "Could not use alpha=7 is out of range" in params.report()


@pytest.mark.parametrize("chunks,message", [
    ({}, r"the PNG has no generation metadata"),
    ({"workflow": "{}", "prompt": "{}"}, r"it carries ComfyUI metadata \(prompt, workflow\)"),
    ({"llm_dit": "{broken"}, r"its 'llm_dit' chunk is damaged"),
])
def test_unreadable_metadata_is_explained(tmp_path, chunks, message):
    with pytest.raises(ValueError, match=message):
        read_parameters(_png(tmp_path, **chunks))


def test_not_a_png(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PNG"):
        read_parameters(path)

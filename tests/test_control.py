"""Structure control: a tiny real `ZImageControlNetModel` beside text and VL conditioning; scale 0
is no ControlNet bit for bit, the window reaches exactly the steps it names, errors say the fix."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from llm_dit.core.request import VLRequest
from llm_dit.pipelines.control import canny
from llm_dit.pipelines.generate import run, txt2img
from llm_dit.pipelines.recipe import vl_generate
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.tiny import ensure_tiny_controlnet

from .conftest import small


def _square() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="white")
    return image


SQUARE = _square()


@pytest.fixture(scope="module")
def controlled(settings):
    return ModelManager(replace(settings, controlnet_path=str(ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir))))


def _pixels(result):
    return np.asarray(result.image, dtype=np.int16)


def test_canny_draws_the_edges_only():
    edges = np.asarray(canny(SQUARE).convert("L")) > 0
    assert edges[16:48, 15:17].any() and edges[15:17, 16:48].any()  # on the square's border
    assert not edges[24:40, 24:40].any() and not edges[:8, :8].any()  # not inside it, not outside


def test_scale_zero_is_no_controlnet_bit_for_bit_and_a_scale_steers(controlled):
    plain = _pixels(txt2img(controlled, small()))
    zero = run(controlled, small(controlnet_conditioning_scale=0.0), control_image=SQUARE)
    assert controlled.load_counts["controlnet"] == 1  # the ControlNet did run, with its residuals at 0
    assert np.array_equal(_pixels(zero), plain)
    steered = run(controlled, small(), control_image=SQUARE)
    assert np.abs(_pixels(steered) - plain).mean() > 1
    assert steered.metadata["control"]["steps"] == list(range(8))
    assert steered.metadata["request"]["controlnet_conditioning_scale"] == 0.75


def test_the_window_reaches_the_steps_it_names(controlled):
    seen = []

    def record(module, args, kwargs):  # what the DiT receives from the ControlNet at each step
        seen.append(bool(kwargs.get("controlnet_block_samples")))

    handle = controlled.pipeline().transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = run(controlled, small(control_guidance_start=0.25, control_guidance_end=0.75), control_image=SQUARE)
    finally:
        handle.remove()
    assert [i for i, on in enumerate(seen) if on] == [2, 3, 4, 5] == result.metadata["control"]["steps"]
    assert len(seen) == 8


def test_style_from_vl_and_layout_from_the_controlnet(controlled):
    reference = Image.new("RGB", (96, 96), (210, 40, 30))
    request = VLRequest(prompt="a fox", height=64, width=64, seed=5, strength=1.0, alpha=0.5)
    with_control = vl_generate(controlled, request, [reference], control_image=SQUARE)
    without = vl_generate(controlled, request, [reference])
    assert with_control.metadata["vl"]["effective_alpha"] == without.metadata["vl"]["effective_alpha"]
    assert np.abs(_pixels(with_control) - _pixels(without)).mean() > 1
    zero = vl_generate(controlled, replace(request, controlnet_conditioning_scale=0.0), [reference],
                       control_image=SQUARE)
    assert np.array_equal(_pixels(zero), _pixels(without))


@pytest.mark.parametrize("fields, message", [
    ({"control_guidance_start": 0.9, "control_guidance_end": 0.95},
     r"control_guidance_start=0.9, control_guidance_end=0.95 covers none of the 8 steps"),
    ({"controlnet_conditioning_scale": 3.0}, r"controlnet_conditioning_scale=3.0 is out of range"),
    ({"control_preprocess": "depth"}, r"control_preprocess='depth' is unknown: use one of canny, none"),
])
def test_bad_control_settings_name_the_field(controlled, fields, message):
    with pytest.raises(ValueError, match=message):
        run(controlled, small(**fields), control_image=SQUARE)


def test_without_a_controlnet_or_with_img2img_the_fix_is_named(manager, controlled):
    with pytest.raises(ValueError, match=r"control_image: this instance has no ControlNet: start it with "
                                         r"--controlnet-path"):
        run(manager, small(), control_image=SQUARE)
    with pytest.raises(ValueError, match=r"control_image works from pure noise .* Set strength to 1.0"):
        run(controlled, small(), SQUARE, control_image=SQUARE)


def test_the_app_serves_control_and_inpainting(controlled, tmp_path):
    from gradio_client import Client, handle_file

    from ui import build_demo

    path = tmp_path / "square.png"
    SQUARE.save(path)
    demo = build_demo(controlled.settings, controlled)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        params = [p["parameter_name"] for p in api["/vl_generate"]["parameters"]]
        assert params[:3] == ["references", "structure_image", "control_image"]
        assert "controlnet_conditioning_scale" in params and "control_guidance_end" in params
        _, _, metadata = client.predict(control_image=handle_file(str(path)), prompt="a box", height=64, width=64,
                                        seed=3, control_guidance_end=0.5, api_name="/txt2img")
        assert metadata["control"]["steps"] == [0, 1, 2, 3]
        mask = tmp_path / "mask.png"
        Image.new("L", (64, 64), 255).save(mask)
        _, _, metadata = client.predict(image=handle_file(str(path)), mask_image=handle_file(str(mask)), prompt="a box",
                                        height=64, width=64, seed=3, strength=0.5, api_name="/img2img")
        assert metadata["mask_image"]["redrawn_fraction"] == 1.0
    finally:
        demo.close()


def test_vl_with_a_control_image_below_strength_1_fails_before_the_vl_model_runs(settings):
    fresh = ModelManager(replace(settings, controlnet_path="unused"))
    with pytest.raises(ValueError, match=r"control_image works from pure noise"):
        vl_generate(fresh, VLRequest(prompt="a fox", height=64, width=64, strength=0.9), [SQUARE],
                    control_image=SQUARE)
    assert not fresh.vl_loaded and fresh.load_counts["vl"] == 0


def test_from_png_regenerates_a_controlled_image(controlled, tmp_path):
    from llm_dit.cli import main

    control = tmp_path / "square.png"
    SQUARE.save(control)
    common = ["--tiny", "--cache-dir", controlled.settings.cache_dir, "--output-dir", str(tmp_path / "out"),
              "--controlnet-path", controlled.settings.controlnet_path, "--control-image", str(control)]
    assert main(["generate", "--prompt", "a box", "--height", "64", "--width", "64", "--seed", "4",
                 "--controlnet-conditioning-scale", "1.2", "--control-guidance-end", "0.5", *common]) == 0
    first = sorted((tmp_path / "out").glob("*.png"))[-1]
    assert main(["generate", "--from-png", str(first), *common]) == 0
    second = [p for p in sorted((tmp_path / "out").glob("*.png")) if p != first][-1]
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))

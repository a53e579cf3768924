"""ControlNet inpainting (a control image and a mask together) through diffusers'
`ZImageControlNetInpaintPipeline`, on a tiny real ControlNet in union 2.0's inpaint layout (its
control input: the map, the mask and the masked init image, 33 channels): at scale 0 the masked
region is txt2img's bit for bit, the rest is the init image; a black mask returns the init image;
the window holds; the old union layout and a strength below 1 are refused with the fix."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from llm_dit.core.request import VLRequest
from llm_dit.pipelines.generate import run, txt2img
from llm_dit.pipelines.recipe import vl_generate
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.tiny import ensure_tiny_controlnet

from .conftest import small

INIT = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
SQUARE = Image.new("RGB", (64, 64), "black")
ImageDraw.Draw(SQUARE).rectangle((16, 16, 47, 47), fill="white")
LEFT = Image.new("L", (64, 64), 0)
LEFT.paste(255, (0, 0, 32, 64))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def inpainting(settings):
    path = ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir, inpaint=True)
    return ModelManager(replace(settings, controlnet_path=str(path)))


def test_at_scale_0_the_masked_region_is_txt2img_and_the_rest_the_init_image(inpainting):
    plain = _pixels(txt2img(inpainting, small()))
    zero = run(inpainting, small(strength=1.0, controlnet_conditioning_scale=0.0), INIT,
               control_image=SQUARE, mask_image=LEFT)
    result = _pixels(zero)
    assert np.array_equal(result[:, :32], plain[:, :32])  # same noise, no residuals: txt2img
    assert np.array_equal(result[:, 32:], np.asarray(INIT, dtype=np.int16)[:, 32:])
    steered = _pixels(run(inpainting, small(strength=1.0), INIT, control_image=SQUARE, mask_image=LEFT))
    assert np.abs(steered[:, :32] - plain[:, :32]).mean() > 1  # the ControlNet (map + mask) steers the region
    assert zero.metadata["control"]["steps"] == list(range(8)) and zero.metadata["mask_image"]["redrawn_fraction"] == 0.5


def test_a_black_mask_returns_the_init_image_and_the_window_holds(inpainting):
    seen = []
    hook = inpainting.pipeline().transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(bool(kwargs.get("controlnet_block_samples"))), with_kwargs=True)
    try:
        result = run(inpainting, small(strength=1.0, control_guidance_end=0.5), INIT, control_image=SQUARE,
                     mask_image=Image.new("L", (64, 64), 0))
    finally:
        hook.remove()
    assert np.array_equal(_pixels(result), np.asarray(INIT, dtype=np.int16))
    assert [i for i, on in enumerate(seen) if on] == [0, 1, 2, 3] == result.metadata["control"]["steps"]


def test_vl_style_with_control_and_mask(inpainting):
    request = VLRequest(prompt="a fox", height=64, width=64, seed=5, strength=1.0, alpha=0.5)
    result = vl_generate(inpainting, request, [Image.new("RGB", (96, 96), (210, 40, 30))], structure_image=INIT,
                         control_image=SQUARE, mask_image=LEFT)
    assert np.array_equal(_pixels(result)[:, 32:], np.asarray(INIT, dtype=np.int16)[:, 32:])
    assert result.metadata["mode"] == "vl" and "control" in result.metadata


def test_the_old_union_layout_and_a_partial_strength_are_refused_with_the_fix(settings, inpainting):
    old = ModelManager(replace(settings, controlnet_path=str(ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir))))
    with pytest.raises(ValueError, match=r"control_image with mask_image: the ControlNet .* takes no mask .*"
                                         r"Controlnet-Union-2.0 or later"):
        run(old, small(strength=1.0), INIT, control_image=SQUARE, mask_image=LEFT)
    fresh = ModelManager(replace(settings, controlnet_path="unused"))
    with pytest.raises(ValueError, match=r"strength=0.6 with control_image and mask_image: .* Set strength to 1.0"):
        vl_generate(fresh, VLRequest(prompt="a fox", height=64, width=64, strength=0.6), [INIT],
                    control_image=SQUARE, mask_image=LEFT)
    assert not any(fresh.load_counts.values())  # refused before anything loaded


def test_the_vl_tab_serves_control_and_mask_at_strength_1(inpainting, tmp_path):
    from gradio_client import Client, handle_file

    from ui import build_demo

    paths = {}
    for name, image in (("init", INIT), ("square", SQUARE), ("mask", LEFT), ("red", Image.new("RGB", (96, 96), "red"))):
        paths[name] = tmp_path / f"{name}.png"
        image.save(paths[name])
    demo = build_demo(inpainting.settings, inpainting)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        outputs = client.predict(references=[handle_file(str(paths["red"]))], structure_image=handle_file(str(paths["init"])),
                                 control_image=handle_file(str(paths["square"])), mask_image=handle_file(str(paths["mask"])),
                                 prompt="a fox", height=64, width=64, seed=3, strength=1.0, api_name="/vl_generate")
        metadata = next(o for o in outputs if isinstance(o, dict) and "mask_image" in o)
        assert metadata["mask_image"]["redrawn_fraction"] == 0.5 and metadata["control"]["steps"] == list(range(8))
    finally:
        demo.close()

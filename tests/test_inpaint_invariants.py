"""What a mask may and may not change, on the tiny models and diffusers' own inpaint pipeline: a
white mask at strength 1 is txt2img from the same conditioning, a white mask below it is img2img,
a black mask gives back the init image, a mask at strength 1 is honoured on the VL route too."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from llm_dit.core.request import VLRequest
from llm_dit.pipelines.generate import run
from llm_dit.pipelines.recipe import condition, vl_generate

from .conftest import small

INIT = Image.radial_gradient("L").resize((80, 64)).convert("RGB")  # not the request's 64x64: fitted first
FITTED = ImageOps.fit(INIT, (64, 64), method=Image.Resampling.LANCZOS)
WHITE, BLACK = Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 0)
RED = Image.new("RGB", (96, 96), (210, 40, 30))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def blend(manager):
    """One VL blend (text + a red reference), reused as the prompt embeddings of every run."""
    request = VLRequest(prompt="a fox", height=64, width=64, seed=5, strength=1.0, alpha=0.5)
    return request, condition(manager, request, [RED]).encoding


def test_a_white_mask_at_strength_1_is_txt2img_from_the_same_blend(manager, blend):
    request, encoding = blend
    plain = run(manager, request, encoding=encoding)
    masked = run(manager, request, INIT, encoding=encoding, mask_image=WHITE)
    assert np.array_equal(_pixels(masked), _pixels(plain))  # same noise, nothing kept: bit for bit
    assert masked.metadata["sigmas"] == plain.metadata["sigmas"]


def test_a_white_mask_below_strength_1_is_img2img(manager):
    plain = run(manager, small(strength=0.6), INIT)
    masked = run(manager, small(strength=0.6), INIT, mask_image=WHITE)
    assert np.array_equal(_pixels(masked), _pixels(plain))
    assert masked.metadata["forwards"] == plain.metadata["forwards"] == 4  # int(8 * 0.6)


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_a_black_mask_gives_back_the_init_image(manager, strength):
    result = run(manager, small(prompt="a city at night", strength=strength), INIT, mask_image=BLACK)
    assert np.array_equal(_pixels(result), np.asarray(FITTED, dtype=np.int16))  # the init pixels, as fitted


def test_the_kept_half_is_the_init_image_and_the_redrawn_half_is_not(manager):
    left = Image.new("L", (64, 64), 0)
    left.paste(255, (0, 0, 32, 64))
    result = _pixels(run(manager, small(strength=0.8), INIT, mask_image=left))
    init = np.asarray(FITTED, dtype=np.int16)
    assert np.array_equal(result[:, 32:], init[:, 32:])
    assert np.abs(result[:, :32] - init[:, :32]).mean() > 5


def test_vl_inpainting_at_strength_1_redraws_the_region_from_noise(manager):
    left = Image.new("L", (64, 64), 0)
    left.paste(255, (0, 0, 32, 64))
    request = VLRequest(prompt="a fox", height=64, width=64, seed=5, strength=1.0, alpha=0.5)
    result = vl_generate(manager, request, [RED], structure_image=INIT, mask_image=left)
    assert np.array_equal(_pixels(result)[:, 32:], np.asarray(FITTED, dtype=np.int16)[:, 32:])
    assert result.metadata["forwards"] == 8 and result.metadata["mode"] == "vl"


def test_a_mask_of_another_shape_is_cropped_as_the_init_image_is(manager):
    mask = Image.new("L", (80, 64), 0)  # the init image's 80x64: fitting to 64x64 crops 8 columns each side
    mask.paste(255, (0, 0, 24, 64))  # columns 8-23 survive the crop: 0-15 of the result (stretched: 0-18)
    result = _pixels(run(manager, small(strength=0.8), INIT, mask_image=mask))
    assert np.array_equal(result[:, 16:], np.asarray(FITTED, dtype=np.int16)[:, 16:])
    assert result.shape == (64, 64, 3)

"""Shift really moves the sigmas; img2img strength follows BRIEF §6 (not stock diffusers)."""

import contextlib

import numpy as np
import pytest
import torch
from diffusers import ZImageImg2ImgPipeline
from PIL import Image

from llm_dit.pipelines.generate import img2img, img2img_plan, shifted_sigmas, txt2img

from .conftest import small

RED = Image.new("RGB", (64, 64), (220, 30, 30))
BLUE = Image.new("RGB", (64, 64), (30, 30, 220))


@contextlib.contextmanager
def count_forwards(transformer):
    calls = []
    handle = transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def test_turbo_schedule_at_shift_3():
    expected = [1.0, 0.955, 0.9, 0.833, 0.75, 0.643, 0.5, 0.3]
    assert shifted_sigmas(8, 3.0) == pytest.approx(expected, abs=1e-3)


def test_shift_changes_the_sigmas_that_run(manager):
    assert shifted_sigmas(8, 1.0) == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    a = txt2img(manager, small(shift=3.0))
    b = txt2img(manager, small(shift=6.0))
    assert a.metadata["sigmas"] == pytest.approx(shifted_sigmas(8, 3.0), abs=1e-5)
    assert b.metadata["sigmas"] == pytest.approx(shifted_sigmas(8, 6.0), abs=1e-5)
    assert a.metadata["sigmas"][1] < b.metadata["sigmas"][1]
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))


# strength -> (forwards, start sigma) at N = 8, shift 3 (BRIEF §6)
TABLE = {0.5: (4, 0.75), 0.6: (4, 0.75), 0.7: (5, 0.833), 0.8: (6, 0.9), 0.9: (7, 0.955), 1.0: (8, 1.0)}


@pytest.mark.parametrize("strength", sorted(TABLE))
def test_strength_table(manager, strength):
    forwards, start = TABLE[strength]
    plan = img2img_plan(8, strength)
    assert plan["forwards"] == forwards and plan["start_sigma"] == pytest.approx(start, abs=1e-3)
    with count_forwards(manager.pipeline().transformer) as calls:
        result = img2img(manager, small(strength=strength), RED)
    assert len(calls) == forwards == result.metadata["forwards"]
    assert result.metadata["start_sigma"] == pytest.approx(start, abs=1e-3)


def _reference_effect(manager, strength):
    red = np.asarray(img2img(manager, small(strength=strength), RED).image).astype(int)
    blue = np.asarray(img2img(manager, small(strength=strength), BLUE).image).astype(int)
    return np.abs(red - blue).mean()


def test_at_strength_0_9_the_reference_matters(manager):
    at_09 = _reference_effect(manager, 0.9)
    assert at_09 > 0.05  # different references, different images (stock diffusers: identical)
    assert _reference_effect(manager, 0.5) > at_09  # lower strength keeps more of the reference


def test_at_strength_1_the_reference_is_ignored_and_we_say_so(manager):
    red = img2img(manager, small(strength=1.0), RED)
    blue = img2img(manager, small(strength=1.0), BLUE)
    assert np.array_equal(np.asarray(red.image), np.asarray(blue.image))
    assert any("ignored" in w for w in red.metadata["warnings"])


def test_stock_diffusers_ignores_the_reference_at_0_9(manager):
    """Why we do not use stock strength: at 0.9 it starts from sigma 1.0 (FACTS.md)."""
    pipe = manager.pipeline()
    stock = ZImageImg2ImgPipeline.from_pipe(pipe)
    embeds = [torch.randn(8, 64, generator=torch.Generator().manual_seed(0))]

    def stock_run(image):
        return np.asarray(stock(image=image, prompt_embeds=embeds, strength=0.9, height=64, width=64,
                                num_inference_steps=8, guidance_scale=0.0,
                                generator=torch.Generator().manual_seed(1)).images[0])

    assert np.array_equal(stock_run(RED), stock_run(BLUE))


def test_strength_too_small_for_one_step(manager):
    with pytest.raises(ValueError, match=r"strength=0.1 .* = 0 DiT forwards: use strength ≥ 0.125"):
        img2img(manager, small(strength=0.1), RED)

"""Inpainting with text or VL conditioning (`ZImageInpaintPipeline` as a view of the loaded models):
black keeps the init image, white is redrawn.

The VAE decoder mixes the whole latent (its mid block attends globally), so what is kept is checked
where it is exact: the latents the decoder receives (a hook on the decoder)."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from llm_dit.core.request import VLRequest
from llm_dit.pipelines.generate import run
from llm_dit.pipelines.recipe import vl_generate

from .conftest import small

INIT = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
LEFT = Image.new("L", (64, 64), 0)
LEFT.paste(255, (0, 0, 32, 64))  # redraw the left half (latent columns 0-3), keep the right half (4-7)


@contextmanager
def decoded_latents(manager):
    seen = []
    handle = manager.pipeline().vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


def test_the_unmasked_half_is_kept_and_the_masked_half_redrawn(manager):
    with decoded_latents(manager) as seen:
        fox = run(manager, small(prompt="a fox", seed=1), INIT, mask_image=LEFT)
        city = run(manager, small(prompt="a city at night", seed=1), INIT, mask_image=LEFT)
    a, b = seen
    assert torch.equal(a[..., 4:], b[..., 4:])  # the init image's latents, whatever the prompt
    assert (a[..., :4] - b[..., :4]).abs().mean() > 0.05  # the prompt redraws the rest
    assert fox.metadata["mask_image"]["redrawn_fraction"] == 0.5 and fox.metadata["mode"] == "img2img"
    assert not np.array_equal(np.asarray(fox.image), np.asarray(city.image))


def test_a_black_mask_returns_the_init_image_whatever_the_prompt(manager):
    black = Image.new("L", (64, 64), 0)
    fox = run(manager, small(prompt="a fox"), INIT, mask_image=black)
    city = run(manager, small(prompt="a city at night"), INIT, mask_image=black)
    assert np.array_equal(np.asarray(fox.image), np.asarray(city.image))


def test_vl_inpainting_restyles_the_masked_region_from_a_reference(manager):
    request = VLRequest(prompt="a fox", height=64, width=64, seed=5, strength=0.9, alpha=0.5)
    red, blue = Image.new("RGB", (96, 96), (210, 40, 30)), Image.new("RGB", (96, 96), (20, 60, 220))
    with decoded_latents(manager) as seen:
        vl_generate(manager, request, [red], structure_image=INIT, mask_image=LEFT)
        vl_generate(manager, request, [blue], structure_image=INIT, mask_image=LEFT)
    a, b = seen
    assert torch.equal(a[..., 4:], b[..., 4:])  # kept
    assert (a[..., :4] - b[..., :4]).abs().mean() > 0.01  # restyled by its reference


def test_a_mask_without_an_init_image_names_the_fix(manager):
    with pytest.raises(ValueError, match=r"mask_image: inpainting redraws part of an init image"):
        run(manager, small(), mask_image=LEFT)

"""The control window under classifier-free guidance, seen from the ControlNet itself (a forward hook
on the tiny real `ZImageControlNetModel`): one ControlNet call per step carrying both CFG halves,
and the DiT gets its residuals exactly at the steps the window names."""

from dataclasses import replace

import pytest
from PIL import Image, ImageDraw

from llm_dit.pipelines.generate import run
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.tiny import ensure_tiny_controlnet

from .conftest import small

SQUARE = Image.new("RGB", (64, 64), "black")
ImageDraw.Draw(SQUARE).rectangle((16, 16, 47, 47), fill="white")


@pytest.fixture(scope="module")
def controlled(settings):
    return ModelManager(replace(settings, controlnet_path=str(ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir))))


def test_under_cfg_the_window_reaches_the_named_steps_with_both_halves(controlled):
    pipe = controlled.pipeline()
    controlnet_calls, dit_steps = [], []
    run(controlled, small(num_inference_steps=2), control_image=SQUARE)  # loads the ControlNet view
    controlnet = controlled.controlnet_view(pipe.scheduler).controlnet
    hooks = [controlnet.register_forward_hook(lambda module, args, output: controlnet_calls.append(len(args[0]))),
             pipe.transformer.register_forward_pre_hook(
                 lambda module, args, kwargs: dit_steps.append(bool(kwargs.get("controlnet_block_samples"))),
                 with_kwargs=True)]
    try:
        result = run(controlled, small(num_inference_steps=4, guidance_scale=2.0, negative_prompt="blurry",
                                       control_guidance_start=0.5, control_guidance_end=1.0), control_image=SQUARE)
    finally:
        for hook in hooks:
            hook.remove()
    assert controlnet_calls == [2, 2, 2, 2]  # one call a step, the conditional and unconditional latents together
    assert [i for i, on in enumerate(dit_steps) if on] == [2, 3] == result.metadata["control"]["steps"]

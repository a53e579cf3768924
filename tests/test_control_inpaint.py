"""A control image and a mask together are refused with the fix, before any model runs: the
ControlNet inpaint pipeline (union 2.0's 33-channel control input) is not wired in yet."""

from dataclasses import replace

import pytest
from PIL import Image

from llm_dit.core.request import VLRequest
from llm_dit.pipelines.generate import run
from llm_dit.pipelines.recipe import vl_generate
from llm_dit.runtime.models import ModelManager

from .conftest import small

IMAGE, MASK = Image.new("RGB", (64, 64), "gray"), Image.new("L", (64, 64), 255)
MESSAGE = r"control_image with mask_image: inpainting under a ControlNet .* Leave one empty"


@pytest.mark.parametrize("strength", [0.6, 1.0])
def test_control_and_mask_are_refused_with_the_fix_before_any_model_loads(settings, strength):
    fresh = ModelManager(replace(settings, controlnet_path="unused"))
    with pytest.raises(ValueError, match=MESSAGE):
        run(fresh, small(strength=strength), IMAGE, control_image=IMAGE, mask_image=MASK)
    with pytest.raises(ValueError, match=MESSAGE):
        vl_generate(fresh, VLRequest(prompt="a fox", height=64, width=64, strength=strength), [IMAGE],
                    control_image=IMAGE, mask_image=MASK)
    assert not any(fresh.load_counts.values())  # refused before anything loaded

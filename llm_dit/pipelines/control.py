"""Structure control: the control map from a control image, and the control window.

The union ControlNet (`alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union`) reads canny, depth, pose,
HED, ... maps alike; it has no mode switch. Canny edges are made here (OpenCV); any other map
(depth, pose) is given ready-made (`control_preprocess="none"`). diffusers' Z-Image ControlNet
pipeline applies the ControlNet at every step; the window (`control_guidance_start/end`, the names
diffusers' other ControlNet pipelines use) drops its residuals outside the steps it names, through
a forward hook on the ControlNet (torch's own extension point) held only for the call.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from PIL import Image

from ..core.images import load_image
from ..core.request import GenerationRequest, scheduled_steps

CANNY_THRESHOLDS = (100, 200)  # OpenCV's hysteresis thresholds, as the ControlNet examples use


def canny(image: Image.Image, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> Image.Image:
    """White edges on black (the canny map ControlNets are trained on), the image's size."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("L")), *thresholds)
    return Image.fromarray(edges).convert("RGB")


def control_map(image, request: GenerationRequest) -> Image.Image:
    """The map the ControlNet reads: the control image's canny edges, or the image itself, at the
    request's size."""
    picture = load_image(image, field="control_image").convert("RGB")
    picture = picture.resize((request.width, request.height), Image.Resampling.LANCZOS)
    return canny(picture) if request.control_preprocess == "canny" else picture


def check_inputs(img2img: bool, control_image=None, mask_image=None, strength: float = 1.0) -> None:
    """A control image needs a run from pure noise (with a mask too: the ControlNet inpaint
    pipeline has no strength), a mask an init image; else the fix, before any work."""
    if control_image is not None and mask_image is not None and strength < 1.0:
        raise ValueError(f"strength={strength} with control_image and mask_image: ControlNet inpainting redraws the "
                         f"masked region from pure noise (diffusers' ZImageControlNetInpaintPipeline has no strength). "
                         f"Set strength to 1.0, or leave the control image empty to inpaint at this strength.")
    if control_image is not None and img2img and mask_image is None:
        raise ValueError("control_image works from pure noise (txt2img, or the VL tab at strength 1.0): diffusers "
                         "0.42.1 has no Z-Image ControlNet img2img pipeline. Set strength to 1.0, or leave the "
                         "control image empty.")
    if mask_image is not None and not img2img:
        raise ValueError("mask_image: inpainting redraws part of an init image: give one (img2img, or the VL tab's "
                         "structure image), or leave the mask empty.")


def window(request: GenerationRequest, forwards: int) -> list[int]:
    """The steps (0-based, of the `forwards` that run) the ControlNet acts on; an error when none."""
    steps = scheduled_steps(forwards, request.control_guidance_start, request.control_guidance_end)
    if not steps:
        raise ValueError(f"control_guidance_start={request.control_guidance_start}, control_guidance_end="
                         f"{request.control_guidance_end} covers none of the {forwards} steps that run (step i "
                         f"sits at i/{forwards}): widen the window, e.g. 0 to 1.")
    return steps


@contextmanager
def windowed(controlnet, steps: list[int], calls: list):
    """While held, the ControlNet's residuals count only at `steps`; every call's step index is
    appended to `calls` (one call per step: under CFG, both halves go in one batch)."""

    def hook(module, args, output):
        step = len(calls)
        calls.append(step)
        return output if step in steps else {}

    handle = controlnet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

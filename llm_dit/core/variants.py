"""The request defaults each Z-Image variant wants, over the request's declared (Turbo) defaults.

Turbo is distilled: 8 forwards, no guidance, shift 3 (the fields' own defaults). Base
(`Tongyi-MAI/Z-Image`) is not: it wants classifier-free guidance with a negative prompt and
28-50 steps. The shift follows the checkpoint's own scheduler config. Which variant a checkpoint
is, is the runtime's business (`llm_dit.runtime.checkpoints.detect_variant`).
"""

from __future__ import annotations

BASE_NEGATIVE = "blurry, low quality, distorted, deformed, watermark, text artifacts"
VARIANT_DEFAULTS = {
    "turbo": {},
    "base": {"num_inference_steps": 28, "guidance_scale": 4.0, "negative_prompt": BASE_NEGATIVE},
}


def variant_defaults(variant: str, scheduler_shift: float | None = None) -> dict:
    """The fields whose default differs for `variant` (and the scheduler config's shift, if read)."""
    defaults = dict(VARIANT_DEFAULTS[variant])
    if scheduler_shift is not None:
        defaults["shift"] = float(scheduler_shift)
    return defaults


def variant_warnings(variant: str, num_inference_steps: int, guidance_scale: float) -> list[str]:
    """Advice when a request does not suit the checkpoint it runs on."""
    if variant == "base" and guidance_scale == 0:
        return ["guidance_scale=0 on Z-Image Base: it is not distilled and wants CFG (e.g. 4 with a negative "
                "prompt); without it images come out washed out."]
    if variant == "base" and num_inference_steps < 20:
        return [f"num_inference_steps={num_inference_steps} on Z-Image Base: it wants 28-50 steps "
                f"(8 is Turbo's, a distilled model)."]
    return []

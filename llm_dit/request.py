"""The one request object of a generation: diffusers' argument names, ranges and defaults.

Ranges and defaults are declared here once (in each field's metadata); the UI builds its controls
from them and `validate` enforces them, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

from .sequence import RESAMPLE_MODES

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds


def _f(default, label, info="", **meta):
    return field(default=default, metadata={"label": label, "info": info, **meta})


@dataclass
class GenerationRequest:
    prompt: str = _f("", "Prompt")
    negative_prompt: str = _f("", "Negative prompt", "used only when guidance_scale > 0")
    system_prompt: str = _f("", "System prompt")
    thinking_content: str = _f("", "Thinking content", "text inside <think>…</think>")
    assistant_content: str = _f("", "Assistant content", "text after the think block")
    force_think_block: bool = _f(False, "Force think block", "add an empty <think></think> block")
    strip_quotes: bool = _f(False, "Strip quotes", 'remove " from the prompt (Z-Image draws them)')
    hidden_layer: int = _f(-2, "Text encoder hidden layer", "hidden_states index; Z-Image uses -2",
                           minimum=-37, maximum=-1, step=1)
    long_prompt_mode: str = _f("interpolate", "Long prompt mode", "past the caption limit",
                               choices=RESAMPLE_MODES)
    height: int = _f(1024, "Height", "multiple of 16", minimum=64, maximum=4096, step=16)
    width: int = _f(1024, "Width", "multiple of 16", minimum=64, maximum=4096, step=16)
    num_inference_steps: int = _f(8, "Steps", "DiT forwards; Turbo uses 8", minimum=1, maximum=100, step=1)
    guidance_scale: float = _f(0.0, "Guidance scale", "0 for Turbo (distilled)", minimum=0.0,
                               maximum=20.0, step=0.5)
    seed: int = _f(-1, "Seed", "-1 draws a random seed", minimum=-1, maximum=SEED_MAX)
    shift: float = _f(3.0, "Shift", "sigma schedule shift; Turbo uses 3.0", minimum=0.1, maximum=20.0,
                      step=0.1)
    strength: float = _f(0.9, "Strength", "img2img: runs int(steps × strength) forwards", minimum=0.0,
                         maximum=1.0, step=0.01)
    loras: str = _f("", "LoRAs", "one per line: path.safetensors or path.safetensors:scale")
    attention_backend: str = _f("native", "Attention backend", "diffusers set_attention_backend")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> tuple["GenerationRequest", dict]:
        """A request from a dict, and the entries that are not request fields."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known), {k: v for k, v in data.items() if k not in names}


def field_meta(name: str) -> dict:
    """Default, label, info and range of a request field (for building UI controls)."""
    f = next(f for f in fields(GenerationRequest) if f.name == name)
    return {"default": f.default, **f.metadata}


def _range_error(name, value, meta, extra=""):
    return ValueError(
        f"{name}={value!r} is out of range: use a value from {meta['minimum']} to {meta['maximum']}{extra}."
    )


def _check_int(name: str, value, extra: str = "") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer: give a whole number{extra}.")
    meta = field_meta(name)
    if "minimum" in meta and not meta["minimum"] <= value <= meta["maximum"]:
        raise _range_error(name, value, meta, extra)
    return value


def _check_float(name: str, value, extra: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is not a number{extra}.")
    meta = field_meta(name)
    if not meta["minimum"] <= value <= meta["maximum"]:
        raise _range_error(name, value, meta, extra)
    return float(value)


def check_number(name: str, value):
    """Range-check one numeric field with the same message `validate` gives."""
    if isinstance(field_meta(name)["default"], int):
        return _check_int(name, value)
    return _check_float(name, value)


def parse_loras(text: str) -> list[tuple[str, float]]:
    """`path` or `path:scale` entries, one per line (or comma-separated) -> [(path, scale)]."""
    entries = []
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item:
            continue
        path, scale = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and head:
            try:
                path, scale = head.strip(), float(tail)
            except ValueError:
                path = item  # a colon inside the path (e.g. C:\...), no scale given
        if not os.path.isfile(path):
            raise ValueError(
                f"loras: {path!r} does not exist: give the path of a LoRA .safetensors file, "
                f"as path or path:scale (one per line)."
            )
        if not path.endswith(".safetensors"):
            raise ValueError(f"loras: {path!r} is not a .safetensors file: only safetensors LoRAs load.")
        if not -10.0 <= scale <= 10.0:
            raise ValueError(f"loras: scale {scale} for {path!r} is out of range: use -10 to 10.")
        entries.append((path, scale))
    return entries


def strength_forwards(num_inference_steps: int, strength: float) -> int:
    """DiT forwards an img2img run makes (BRIEF §6): int(N × s), robust to float error."""
    return int(num_inference_steps * strength + 1e-9)


def validate(request: GenerationRequest, img2img: bool = False) -> GenerationRequest:
    """Check every field; raise ValueError naming the field, the value and the fix."""
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise ValueError("prompt is empty: describe the image you want.")
    for name in ("height", "width"):
        value = _check_int(name, getattr(request, name))
        if value % 16:
            lower, upper = value - value % 16, value - value % 16 + 16
            raise ValueError(f"{name}={value} is not a multiple of 16: use {lower} or {upper}.")
    _check_int("num_inference_steps", request.num_inference_steps, " (Turbo uses 8)")
    _check_float("guidance_scale", request.guidance_scale, " (Turbo uses 0)")
    seed = request.seed
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -1 <= seed <= SEED_MAX:
        raise ValueError(f"seed={request.seed!r} is out of range: use -1 (random) or 0 to 2**64-1.")
    _check_float("shift", request.shift, " (Turbo uses 3.0)")
    _check_int("hidden_layer", request.hidden_layer)
    if request.long_prompt_mode not in RESAMPLE_MODES:
        raise ValueError(
            f"long_prompt_mode={request.long_prompt_mode!r} is unknown: use one of {', '.join(RESAMPLE_MODES)}."
        )
    if img2img:
        _check_float("strength", request.strength)
        if strength_forwards(request.num_inference_steps, request.strength) < 1:
            need = 1 / request.num_inference_steps
            raise ValueError(
                f"strength={request.strength} with num_inference_steps={request.num_inference_steps} "
                f"runs int({request.num_inference_steps} × {request.strength}) = 0 DiT forwards: "
                f"use strength ≥ {need:.3f} or more steps."
            )
    parse_loras(request.loras)
    return request

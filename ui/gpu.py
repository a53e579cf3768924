"""Hugging Face Spaces / ZeroGPU: GPU handlers get `@spaces.GPU` with a duration sized from the
request. Off ZeroGPU (`SPACES_ZERO_GPU` unset) `spaces.GPU` returns the function unchanged."""

from __future__ import annotations

import spaces

BASE_S = 8.0  # queueing into the worker, VAE, bookkeeping
PER_STEP_MEGAPIXEL_S = 0.6  # one DiT forward at 1024x1024 on a ZeroGPU slice, with margin
VL_EXTRACT_S = 8.0  # one Qwen3-VL extraction
MAX_S = 300


def gpu_seconds(request, cells: int = 1, extractions: int = 0, new_tokens: int = 0) -> int:
    """Seconds to reserve: steps × megapixels × cells, plus VL extractions and text generation."""
    seconds = BASE_S + VL_EXTRACT_S * extractions + 0.05 * new_tokens
    if hasattr(request, "num_inference_steps"):
        megapixels = request.height * request.width / 1024**2
        seconds += PER_STEP_MEGAPIXEL_S * request.num_inference_steps * megapixels * max(1, cells)
    return int(min(MAX_S, max(10, round(seconds))))


def on_gpu(fn, duration):
    """`fn` as a ZeroGPU task whose reservation is `duration(*args, **kwargs)` seconds."""
    return spaces.GPU(duration=duration)(fn)

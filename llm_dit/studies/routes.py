"""The `route` axis of studies and sweeps: the VL embedding blend, or the baseline every reviewer
asks for: Qwen3-VL captions the reference and that caption plus the prompt goes through plain
txt2img/img2img, no embedding blend."""

from __future__ import annotations

from dataclasses import replace

from ..core.request import GenerationRequest, RewriteRequest, VLRequest
from ..pipelines.rewrite import rewrite

ROUTES = ("embedding", "text")
CAPTION_TEMPLATE = "Image captioner"


def caption_request(request: VLRequest, captioner: dict | None = None) -> RewriteRequest:
    """The text route's captioning: the "Image captioner" template on local Qwen3-VL, or on any
    rewrite backend `captioner` names (RewriteRequest fields, e.g. an OpenAI-compatible server)."""
    seed = request.seed if request.seed != -1 else 0
    return replace(RewriteRequest(prompt="", template=CAPTION_TEMPLATE, backend="qwen3_vl", seed=seed,
                                  max_new_tokens=160), **(captioner or {}))


def caption(manager, reference, request: VLRequest, captioner: dict | None = None) -> str:
    return rewrite(manager, caption_request(request, captioner), reference).text


def text_request(request: VLRequest, caption: str) -> GenerationRequest:
    """The text route: the prompt plus the VL caption, as a plain generation request."""
    plain, _ = GenerationRequest.from_dict({**request.to_dict(), "prompt": f"{request.prompt}\n\nThe image's look: {caption}"})
    return plain

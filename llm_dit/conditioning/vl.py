"""Qwen3-VL extraction: a reference image + text -> hidden states the DiT can take (BRIEF §4).

The VL model sees the image and text in the Qwen3 chat format (optionally a system prompt and an
injected empty think block), and we read `hidden_states[layer]`. Which tokens are kept is decided
from the input ids (image pads, vision start/end markers), never from guessed offsets. Results are
cached by content, so a repeated extraction neither loads nor runs the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import torch
from PIL import Image
from transformers import Qwen3VLProcessor

from .blend import ReferenceStats
from ..core.encode import check_hidden_layer
from ..core.devices import input_device
from ..core.images import image_sha256
from ..core.images import load_image
from ..core.prompt import format_chat
from ..core.request import TOKEN_MODES
from ..serving import cancel


# Fixed calibration prompts for the text encoder's reference statistics (BRIEF §5).
CALIBRATION_PROMPTS = (
    "A photograph of a red fox standing in fresh snow at sunrise, shallow depth of field.",
    "An oil painting of a harbour town at dusk, warm lamps reflected in the water.",
    "A minimalist poster with the word SUMMER in bold sans-serif letters on a yellow background.",
    "Close-up portrait of an elderly fisherman with a weathered face, natural window light.",
    "Isometric 3D render of a tiny cozy library with wooden shelves and a reading cat.",
    "Watercolor illustration of a mountain lake surrounded by pine trees in morning mist.",
    "A busy night market in the rain, neon signs, reflections on wet asphalt, cinematic.",
    "Flat vector icon set of kitchen tools, pastel colours, clean outlines.",
    "Macro shot of dew drops on a spider web, backlit, bokeh background.",
    "Anime style girl with short silver hair looking at the stars from a rooftop.",
    "An astronaut riding a horse across a desert under a purple sky, surreal art.",
    "Architectural photo of a brutalist concrete building against a clear blue sky.",
)


class ImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3VLProcessor without the video processor, which needs torchvision (FACTS.md). We never
    pass videos, so this loads from the hub layout with and without torchvision installed."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


@dataclass(frozen=True)
class ExtractionParams:
    text: str = ""
    hidden_layer: int = -6
    text_hidden_layer: int = 0  # 0 = same layer as the image tokens
    token_mode: str = "full"
    think_block: bool = False
    system_prompt: str = ""


@dataclass
class Extraction:
    embeds: torch.Tensor  # [selected tokens, hidden], float32 on the CPU
    is_image: torch.Tensor  # [selected tokens] bool: image pad or vision marker
    counts: dict  # tokens by type in the whole input, and how many were selected
    params: ExtractionParams
    image_sha256: str | None
    model_id: str
    key: str
    cached: bool = False  # True when this came from the cache (no model ran)

    def part(self, image: bool) -> torch.Tensor:
        """The image-token (or text-token) part of the selected sequence."""
        mask = self.is_image if image else ~self.is_image
        if not bool(mask.any()):
            kind = "image" if image else "text"
            raise ValueError(f"the extraction has no {kind} tokens (token_mode={self.params.token_mode!r}).")
        return self.embeds[mask]


def check_params(params: ExtractionParams, num_layers: int) -> None:
    if params.token_mode not in TOKEN_MODES:
        raise ValueError(f"token_mode={params.token_mode!r} is unknown: use one of {', '.join(TOKEN_MODES)}.")
    check_hidden_layer(params.hidden_layer, num_layers, "vl_hidden_layer", "the VL model")
    if params.text_hidden_layer:
        check_hidden_layer(params.text_hidden_layer, num_layers, "vl_text_hidden_layer", "the VL model")


def cache_key(image_hash: str | None, params: ExtractionParams, model_id: str, min_pixels: int,
              max_pixels: int) -> str:
    payload = json.dumps([image_hash, asdict(params), model_id, min_pixels, max_pixels], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


MAX_ASPECT = 200  # Qwen3-VL's image processor refuses more elongated images


def check_aspect(size: tuple[int, int], field: str = "references") -> None:
    """A ValueError naming `field` for an image (width, height) Qwen3-VL cannot take (aspect ratio
    over 200:1)."""
    w, h = size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ValueError(f"{field}: the image is {w}×{h} px, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; "
                         f"Qwen3-VL takes at most {MAX_ASPECT}:1: crop or pad it.")


def build_inputs(processor, image: Image.Image | None, params: ExtractionParams, min_pixels: int,
                 max_pixels: int) -> dict:
    """Processor inputs for the chat [system] user(image, text) assistant, with the think block
    injected as tokens after tokenization (Qwen3-VL's template has no enable_thinking)."""
    content = ([{"type": "image"}] if image is not None else []) + (
        [{"type": "text", "text": params.text}] if params.text else [])
    if not content:
        raise ValueError("a VL extraction needs an image or some text: both are empty.")
    messages = ([{"role": "system", "content": params.system_prompt}] if params.system_prompt else []) + [
        {"role": "user", "content": content}]
    if image is not None:
        check_aspect(image.size)
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    kwargs = {"images": [image], "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}} if image else {}
    inputs = dict(processor(text=[text], return_tensors="pt", **kwargs))
    if params.think_block:
        tok = processor.tokenizer
        think = tok.convert_tokens_to_ids(["<think>"]) + tok.encode("\n\n", add_special_tokens=False)
        think += tok.convert_tokens_to_ids(["</think>"]) + tok.encode("\n\n", add_special_tokens=False)
        extra = torch.tensor([think], dtype=inputs["input_ids"].dtype)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
        if "mm_token_type_ids" in inputs:
            inputs["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    return inputs


def token_masks(input_ids: torch.Tensor, config) -> dict:
    """Boolean masks over one sequence of input ids, from the model's own token ids."""
    ids = input_ids.flatten()
    image = ids == config.image_token_id
    marker = (ids == config.vision_start_token_id) | (ids == config.vision_end_token_id)
    return {"image": image, "marker": marker, "text": ~(image | marker)}


def select(masks: dict, mode: str) -> torch.Tensor:
    return {"full": torch.ones_like(masks["image"]), "image_only": masks["image"] | masks["marker"],
            "image_no_markers": masks["image"], "text_only": masks["text"]}[mode]


def _template_count(processor, params: ExtractionParams, has_image: bool) -> int:
    """Chat-scaffold tokens: the same chat with an empty user text, less the image placeholders."""
    content = [{"type": "image"}] if has_image else []
    messages = ([{"role": "system", "content": params.system_prompt}] if params.system_prompt else []) + [
        {"role": "user", "content": content or ""}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    count = len(processor.tokenizer(text, add_special_tokens=False).input_ids) - (3 if has_image else 0)
    return count + (4 if params.think_block else 0)


@torch.no_grad()
def run_extraction(model, processor, image, params: ExtractionParams, min_pixels: int, max_pixels: int):
    """One forward pass; returns (embeds, is_image, counts) for the selected tokens."""
    inputs = build_inputs(processor, image, params, min_pixels, max_pixels)
    device = input_device(model)
    # logits_to_keep=1: the LM head would otherwise compute ~150k logits per token for nothing
    out = model(**{k: v.to(device) for k, v in inputs.items()}, output_hidden_states=True, logits_to_keep=1)
    masks = token_masks(inputs["input_ids"], model.config)
    states = out.hidden_states[params.hidden_layer][0]
    if params.text_hidden_layer and params.text_hidden_layer != params.hidden_layer:
        text_states = out.hidden_states[params.text_hidden_layer][0]
        states = torch.where(masks["text"].to(device)[:, None], text_states, states)
    keep = select(masks, params.token_mode)
    is_image = (masks["image"] | masks["marker"])[keep]
    template = _template_count(processor, params, image is not None)
    counts = {
        "total": int(keep.numel()), "selected": int(keep.sum()), "image": int(masks["image"].sum()),
        "marker": int(masks["marker"].sum()), "template": template,
        "text": int(masks["text"].sum()) - template,
    }
    return states[keep.to(device)].float().cpu(), is_image.cpu(), counts


@torch.no_grad()
def reference_stats(text_encoder, tokenizer, layer: int) -> ReferenceStats:
    """Per-dimension mean/std of the text encoder at `layer` over the calibration prompts."""
    device = input_device(text_encoder)
    chunks = []
    for prompt in CALIBRATION_PROMPTS:
        ids = tokenizer(format_chat(prompt), return_tensors="pt", add_special_tokens=False).input_ids
        chunks.append(text_encoder(input_ids=ids.to(device), output_hidden_states=True).hidden_states[layer][0].float().cpu())
    tokens = torch.cat(chunks)
    return ReferenceStats(tokens.mean(dim=0), tokens.std(dim=0, correction=0))


def extract(manager, image, params: ExtractionParams, cache_only: bool = False) -> Extraction:
    """Extract (or fetch from the cache) the VL hidden states for `image` (None: text only).
    With `cache_only`, a miss raises LookupError instead of loading the model."""
    image = load_image(image, field="reference") if image is not None else None
    image_hash = image_sha256(image) if image is not None else None
    settings = manager.settings
    key = cache_key(image_hash, params, manager.vl_model_id, settings.vl_min_pixels, settings.vl_max_pixels)
    hit = manager.vl_cache.get(key)
    if hit is not None:
        return replace(hit, embeds=hit.embeds.clone(), cached=True)
    if cache_only:
        raise LookupError("this extraction is not cached yet")
    cancel.check()  # every extraction loop (a sweep's prefetch, a recipe's references) stops here
    if manager.remote_vl:  # another instance extracts (and checks the layers against its model)
        width = manager.pipeline().transformer.config.cap_feat_dim
        embeds, is_image, counts = manager.remote_vl.extract(image, params, width)
    else:
        check_params(params, manager.vl_config().text_config.num_hidden_layers)  # before loading 8 GB
        with manager.vl_model() as (model, processor):
            embeds, is_image, counts = run_extraction(model, processor, image, params, settings.vl_min_pixels,
                                                      settings.vl_max_pixels)
            del model, processor  # let an unload at the session's end free the memory
    extraction = Extraction(embeds, is_image, counts, params, image_hash, manager.vl_model_id, key)
    manager.vl_cache.put(key, extraction)
    return replace(extraction, embeds=embeds.clone())

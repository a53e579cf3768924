"""The style-transfer recipe: reference image(s) + prompt -> VL extraction -> blend -> DiT.

Walks forward only: `vl.extract` -> `blend` -> `generate.run`. Memory order on one GPU: the VL
model extracts (and, with auto-unload, is released) before the text encoder, the DiT and the VAE
run, so VL and DiT never need to be resident together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from PIL import Image

from . import blend
from .generate import GenerationResult, PromptEncoding, encode_prompt, run
from .images import image_sha256, load_image
from .models import ModelManager
from .request import VLRequest, parse_weights, validate
from .timeline import Timeline
from .vl import Extraction, ExtractionParams
from .vl import extract as vl_extract

NEUTRAL_GREY = (128, 128, 128)


@dataclass
class Conditioning:
    """A finished blend and everything worth reporting about it."""

    encoding: PromptEncoding  # prompt_embeds = the blend
    extractions: list[Extraction]
    report: dict


def extraction_params(request: VLRequest, **overrides) -> ExtractionParams:
    params = ExtractionParams(
        text=request.prompt if request.vl_use_prompt else request.vl_text,
        hidden_layer=request.vl_hidden_layer, text_hidden_layer=request.vl_text_hidden_layer,
        token_mode=request.token_mode, think_block=request.vl_think_block,
        system_prompt=request.vl_system_prompt,
    )
    return replace(params, **overrides)


def _vl_parts(manager, request: VLRequest, reference, cache_only: bool) -> tuple[list, list[Extraction]]:
    """One reference's VL sequence(s) and their weights, per `vl_composition` (not yet aligned)."""
    ratio = request.image_text_ratio

    def extract(image, params):
        return vl_extract(manager, image, params, cache_only=cache_only)

    if request.vl_composition == "extraction":
        ex = extract(reference, extraction_params(request))
        return [(ex.embeds, 1.0)], [ex]
    if request.vl_composition == "intra_vl":
        ex = extract(reference, extraction_params(request, token_mode="full"))
        return [(ex.part(image=True), ratio), (ex.part(image=False), 1.0 - ratio)], [ex]
    # dual: the image alone (style) and the text alone (content), each its own extraction
    style = extract(reference, extraction_params(request, token_mode="image_only", text=""))
    content = extract(None, extraction_params(request, token_mode="text_only"))
    return [(style.embeds, ratio), (content.embeds, 1.0 - ratio)], [style, content]


def prefetch(manager: ModelManager, request: VLRequest, references: list) -> None:
    """Run (or find cached) every extraction `condition` will need, without encoding text: a
    sweep calls this for all its cells inside one VL session, so the model loads once."""
    images = [load_image(r, field=f"references[{i}]") for i, r in enumerate(references)]
    for image in images:
        _vl_parts(manager, request, image, cache_only=False)
    if request.blend_mode == "style_delta":
        _vl_parts(manager, request, Image.new("RGB", images[0].size, NEUTRAL_GREY), cache_only=False)


def condition(manager: ModelManager, request: VLRequest, references: list,
              cache_only: bool = False) -> Conditioning:
    """Extract, align, scale and mix: the caption embeddings for a VL generation.
    With `cache_only` (live previews), a missing extraction raises LookupError, loading nothing."""
    validate(request, img2img=request.strength < 1.0, policy=manager.policy)
    if not references:
        raise ValueError("references: no reference image: give at least one image to condition on.")
    images = [load_image(r, field=f"references[{i}]") for i, r in enumerate(references)]
    weights = parse_weights(request.reference_weights, len(images))
    warnings = []
    if request.token_mode == "text_only" and request.vl_composition == "extraction":
        warnings.append("token_mode='text_only' drops the image tokens: the reference image barely matters.")

    # Every extraction first: with auto-unload the VL model is gone before the text encoder runs.
    # One VL session: the model loads at most once for all of them (and not at all on cache hits).
    timeline = Timeline()
    per_reference, extractions = [], []
    neutral_parts = None
    with manager.vl_session(timeline), timeline.stage("vl_extract"):
        for image in images:
            parts, exs = _vl_parts(manager, request, image, cache_only)
            per_reference.append(parts)
            extractions += exs
        if request.blend_mode == "style_delta":
            grey = Image.new("RGB", images[0].size, NEUTRAL_GREY)
            neutral_parts, exs = _vl_parts(manager, request, grey, cache_only)
            extractions += exs
    encoding = encode_prompt(manager, request, timeline)
    text = encoding.encoded.embeds.float().cpu()
    length, width = text.shape
    if extractions[0].embeds.shape[1] != width:
        raise ValueError(
            f"the VL model's hidden size ({extractions[0].embeds.shape[1]}) differs from the DiT's caption "
            f"width ({width}): use a Qwen3-VL whose text hidden size is {width} (Qwen3-VL-4B for Z-Image)."
        )
    sequences = [blend.weighted_sum(parts, length, request.length_mode) for parts in per_reference]
    vl_seq = blend.weighted_sum(list(zip(sequences, weights)), length, request.length_mode)
    ref = manager.reference_stats(request.hidden_layer)
    # Per-dim statistics from every VL token at full resolution; the same transform for the neutral.
    source = torch.cat([seq for parts in per_reference for seq, w in parts if w > 0])
    transform = blend.fit_statistics(
        source, vl_seq, text, ref, scale_to_text=request.scale_to_text, target_std=request.target_std,
        normalization=request.normalization, outlier_mode=request.outlier_mode, threshold=request.outlier_threshold)
    aligned, outliers = transform.apply(vl_seq), transform.outlier_dims
    neutral = None
    if neutral_parts is not None:
        neutral = transform.apply(blend.weighted_sum(neutral_parts, length, request.length_mode))
    mixed = blend.mix(text, aligned, request.alpha, request.blend_mode, neutral)
    threshold = request.outlier_threshold
    report = {
        "effective_alpha": round(blend.effective_alpha(text, aligned, mixed), 4),
        "stats": {
            "text": blend.sequence_stats(text, ref, threshold),
            "vl_before_scaling": blend.sequence_stats(vl_seq, ref, threshold),
            "vl_after_scaling": blend.sequence_stats(aligned, ref, threshold),
            "blend": blend.sequence_stats(mixed),
        },
        "masked_dims": outliers if request.outlier_mode != "none" else [],
        "references": [{"sha256": image_sha256(im), "size": list(im.size), "weight": w}
                       for im, w in zip(images, weights)],
        "extractions": [{"key": ex.key, "image_sha256": ex.image_sha256, "token_mode": ex.params.token_mode,
                         "tokens": ex.counts, "cached": ex.cached} for ex in extractions],
        "vl_model": manager.vl_model_id,
    }
    encoding = replace(encoding, prompt_embeds=mixed, mode="vl", metadata={"vl": report}, warnings=warnings)
    return Conditioning(encoding, extractions, report)


def vl_generate(manager: ModelManager, request: VLRequest, references: list,
                structure_image=None) -> GenerationResult:
    """VL-conditioned generation: img2img from the structure image (default: the first reference)
    at `strength`, or txt2img when strength is 1.0 (which would ignore any init image anyway)."""
    conditioning = condition(manager, request, references)
    init = None
    if request.strength < 1.0:
        init = structure_image if structure_image is not None else references[0]
    result = run(manager, request, init, encoding=conditioning.encoding)
    result.metadata["vl"]["structure_image"] = structure_image is not None
    return result


def export(conditioning: Conditioning, request: VLRequest, path) -> Path:
    """The conditioning as `.safetensors`: the blended `prompt_embeds` (ready for diffusers), the
    text embeddings, each raw extraction with its token types, and the request and report as JSON."""
    tensors = {"prompt_embeds": conditioning.encoding.prompt_embeds.float().contiguous(),
               "text_embeds": conditioning.encoding.encoded.embeds.float().contiguous()}
    for i, ex in enumerate(conditioning.extractions):
        tensors[f"extraction_{i}.embeds"] = ex.embeds.contiguous()
        tensors[f"extraction_{i}.is_image"] = ex.is_image.to(torch.uint8)
    metadata = {"request": json.dumps(request.to_dict()), "report": json.dumps(conditioning.report),
                "params": json.dumps([asdict(ex.params) for ex in conditioning.extractions])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path

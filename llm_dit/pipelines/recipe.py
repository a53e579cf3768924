"""The style-transfer recipe: reference image(s) + prompt -> VL extraction -> blend -> DiT.

Walks forward only: `vl.extract` -> `blend` -> `generate.run`. Memory order on one GPU: the VL
model extracts (and, with auto-unload, is released) before the text encoder, the DiT and the VAE
run, so VL and DiT never need to be resident together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from PIL import Image

from ..conditioning import blend
from .control import check_inputs
from .generate import GenerationResult, PromptEncoding, count_prompt, encode_prompt, run
from ..core.images import image_sha256, load_image
from ..runtime.models import ModelManager
from ..core.request import GenerationRequest, VLRequest, parse_weights, scheduled_steps, strength_forwards, validate
from ..serving.timeline import Timeline
from ..conditioning.vl import Extraction, ExtractionParams
from ..conditioning.vl import extract as vl_extract

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


def prefetch(manager: ModelManager, request: VLRequest, references: list, cache_only: bool = False) -> None:
    """Run (or find cached) every extraction `condition` will need, without encoding text: a
    sweep calls this for all its cells inside one VL session, so the model loads once. With
    `cache_only`, LookupError when one is not cached (the VL model would have to load)."""
    if request.alpha == 0.0:
        return  # condition() extracts nothing at alpha 0
    images = [load_image(r, field=f"references[{i}]") for i, r in enumerate(references)]
    for image in images:
        _vl_parts(manager, request, image, cache_only=cache_only)
    if request.blend_mode == "style_delta":
        _vl_parts(manager, request, Image.new("RGB", images[0].size, NEUTRAL_GREY), cache_only=cache_only)


ADAIN_MODES = ("adain", "adain_per_dim")


def inactive_fields(request: VLRequest) -> dict:
    """Request fields that cannot change this request's result, each with the reason: the UI
    greys them out and the metadata records them, so no knob is silently ignored."""
    if request.alpha == 0.0:
        vl_only = {f.name for f in fields(VLRequest)} - {f.name for f in fields(GenerationRequest)} - {"alpha"}
        return {name: "alpha 0 is the text alone: no VL extraction runs" for name in sorted(vl_only)}
    off = {}
    if request.vl_use_prompt:
        off["vl_text"] = "VL reads the prompt (vl_use_prompt)"
    if request.vl_composition == "extraction":
        off["image_text_ratio"] = "only intra_vl and dual mix an image part with a text part"
        if request.token_mode in ("image_only", "image_no_markers"):
            off["vl_text_hidden_layer"] = f"token_mode={request.token_mode!r} keeps no text tokens"
    else:
        off["token_mode"] = (f"vl_composition={request.vl_composition!r} picks its own tokens "
                             f"({'full' if request.vl_composition == 'intra_vl' else 'image_only + text_only'})")
    if not request.scale_to_text:
        off["normalization"] = off["target_std"] = "scale_to_text is off"
    elif request.normalization == "per_dim":
        off["target_std"] = "per_dim sets each dimension to the text encoder's profile: no global target"
    if request.outlier_mode == "none":
        off["outlier_threshold"] = "outlier_mode is none"
    if request.blend_mode in ADAIN_MODES:
        off["length_mode"] = f"{request.blend_mode} takes the VL statistics from the whole extraction"
    if request.blend_mode != "concat":
        off["concat_tokens"] = "only blend_mode concat appends tokens"
    if not needs_text_encoder(request):
        off["hidden_layer"] = "pure VL (alpha 1, linear): the text encoder does not run"
        if request.target_std == 0.0 and request.normalization == "global":
            off["scale_to_text"] = "pure VL: a global scale changes nothing after the DiT's caption RMSNorm"
    return off


def needs_text_encoder(request: VLRequest) -> bool:
    """False when the caption cannot depend on the text embeddings: alpha 1 with a linear mode,
    no per-dimension statistics (they come from the text encoder) and no guidance. The DiT's
    caption RMSNorm makes a global scale irrelevant, so the tokenizer's count is all we need."""
    if (request.vl_start, request.vl_end) != (0.0, 1.0):
        return True  # the steps outside the window are conditioned on the text
    pure = request.alpha == 1.0 and request.blend_mode in ("linear", "linear_rms")
    global_only = not request.scale_to_text or request.normalization == "global"
    return not (pure and global_only and request.outlier_mode == "none" and request.guidance_scale == 0)


def _statistics_source(per_reference: list, weights: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Every VL token at full resolution with its weight in the mix (reference weight × part
    weight, spread over the part's tokens); tokens of weight 0 do not enter."""
    seqs, token_weights = [], []
    for parts, ref_weight in zip(per_reference, weights):
        part_total = sum(w for _, w in parts)
        for seq, part_weight in parts:
            share = ref_weight / sum(weights) * part_weight / part_total
            if share > 0:
                seqs.append(seq)
                token_weights.append(torch.full((seq.shape[0],), share / seq.shape[0]))
    return torch.cat(seqs), torch.cat(token_weights)


def _align(per_reference: list, weights: list, length: int, mode: str) -> torch.Tensor:
    sequences = [blend.weighted_sum(parts, length, mode) for parts in per_reference]
    return blend.weighted_sum(list(zip(sequences, weights)), length, mode)


def _caption_norm_weight(manager):
    """The weight of the DiT's caption RMSNorm (None when it has none)."""
    return getattr(manager.pipeline().transformer.cap_embedder[0], "weight", None)


def _reference_report(images, weights) -> list:
    return [{"sha256": image_sha256(im), "size": list(im.size), "weight": w} for im, w in zip(images, weights)]


def condition(manager: ModelManager, request: VLRequest, references: list,
              cache_only: bool = False) -> Conditioning:
    """Extract, align, scale and mix: the caption embeddings for a VL generation.
    With `cache_only` (live previews), a missing extraction raises LookupError, loading nothing.

    What cannot matter is skipped: alpha 0 runs no VL extraction (every mode is then exactly the
    text), and a pure-VL blend (`needs_text_encoder`) never loads or runs the text encoder."""
    validate(request, img2img=request.strength < 1.0, policy=manager.policy)
    _check_window(request)
    if not references:
        raise ValueError("references: no reference image: give at least one image to condition on.")
    images = [load_image(r, field=f"references[{i}]") for i, r in enumerate(references)]
    weights = parse_weights(request.reference_weights, len(images))
    ignored = inactive_fields(request)
    timeline = Timeline()
    if request.alpha == 0.0:
        encoding = encode_prompt(manager, request, timeline)
        text = encoding.encoded.embeds.float().cpu()
        report = {"effective_alpha": 0.0, "effective_alpha_range": [0.0, 0.0],
                  "stats": {"text": blend.sequence_stats(text, manager.reference_stats(request.hidden_layer))},
                  "outlier_dims": [], "masked_dims": [], "references": _reference_report(images, weights),
                  "extractions": [], "vl_model": manager.vl_model_id,
                  "ran": {"vl_extraction": False, "text_encoder": True}, "ignored": ignored}
        encoding = replace(encoding, prompt_embeds=text, mode="vl", metadata={"vl": report})
        return Conditioning(encoding, [], report)
    warnings = []
    if request.token_mode == "text_only" and request.vl_composition == "extraction":
        warnings.append("token_mode='text_only' drops the image tokens: the reference image barely matters.")

    # Every extraction first: with auto-unload the VL model is gone before the text encoder runs.
    # One VL session: the model loads at most once for all of them (and not at all on cache hits).
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
    with_text = needs_text_encoder(request)
    encoding = (encode_prompt if with_text else count_prompt)(manager, request, timeline)
    width = manager.pipeline().transformer.config.cap_feat_dim
    if extractions[0].embeds.shape[1] != width:
        raise ValueError(
            f"the VL model's hidden size ({extractions[0].embeds.shape[1]}) differs from the DiT's caption "
            f"width ({width}): use a Qwen3-VL whose text hidden size is {width} (Qwen3-VL-4B for Z-Image)."
        )
    limit = encoding.encoded.caption_limit
    length = min(encoding.encoded.token_count, limit)  # the text's tokens: the VL sequence's length
    concat = None
    if request.blend_mode == "concat":
        available = max(seq.shape[0] for parts in per_reference for seq, _ in parts)
        concat = _concat_plan(request, length, available, limit, warnings)
        length = concat["vl_tokens"]
    used = sorted({blend.length_mode_used(seq.shape[0], length, request.length_mode)
                   for parts in per_reference for seq, _ in parts})
    if request.length_mode == "truncate" and "interpolate" in used and "length_mode" not in ignored:
        warnings.append(f"length_mode='truncate' cannot lengthen a VL sequence shorter than the target "
                        f"({length} tokens): it was interpolated instead.")
    source, token_weights = _statistics_source(per_reference, weights)
    report = {"references": _reference_report(images, weights),
              "extractions": [{"key": ex.key, "image_sha256": ex.image_sha256, "token_mode": ex.params.token_mode,
                               "tokens": ex.counts, "cached": ex.cached} for ex in extractions],
              "vl_model": manager.vl_model_id,
              "ran": {"vl_extraction": True, "text_encoder": with_text, "length_mode": "+".join(used)},
              "ignored": ignored}
    if concat:
        report["concat"] = concat
    if with_text:
        text = encoding.encoded.embeds.float().cpu()
        mixed, text_part, vl_part = _blend(manager, request, text, length, per_reference, weights, neutral_parts,
                                           source, token_weights, report)
        if request.blend_mode == "adain":
            warnings.append("blend_mode='adain' rescales and shifts the whole text by the VL's global mean and std: "
                            "after the DiT's RMSNorm that is one constant offset per token (see the VL share); "
                            "adain_per_dim or linear transfer more.")
    else:  # pure VL: the aligned VL sequence itself; its scale is irrelevant after the caption RMSNorm
        mixed = _align(per_reference, weights, length, request.length_mode)
        if request.target_std > 0 and request.scale_to_text:
            mixed = mixed * blend.global_factor(mixed, request.target_std)
        text_part, vl_part = torch.zeros_like(mixed), mixed
        report["stats"] = {"vl_before_scaling": blend.sequence_stats(source, weights=token_weights),
                           "blend": blend.sequence_stats(mixed)}
        report["outlier_dims"] = report["masked_dims"] = []
    share = blend.vl_share(text_part, vl_part, _caption_norm_weight(manager))
    report = {"effective_alpha": share["mean"], "effective_alpha_range": [share["min"], share["max"]], **report}
    encoding = replace(encoding, prompt_embeds=mixed, mode="vl", metadata={"vl": report}, warnings=warnings)
    window = (request.vl_start, request.vl_end)
    if window != (0.0, 1.0):  # the blend on the window's steps only, the text on the others
        encoding = replace(encoding, outside=encoding.encoded.embeds.float().cpu(), window=window)
    return Conditioning(encoding, extractions, report)


def _check_window(request: VLRequest) -> None:
    n = request.num_inference_steps
    forwards = strength_forwards(n, request.strength) if request.strength < 1.0 else n
    if not scheduled_steps(forwards, request.vl_start, request.vl_end):
        raise ValueError(
            f"vl_start={request.vl_start}, vl_end={request.vl_end} covers none of the {forwards} steps that run "
            f"(step i sits at i/{forwards}): widen the window, e.g. vl_start=0, vl_end=1.")


def _concat_plan(request: VLRequest, text_tokens: int, available: int, limit: int, warnings: list) -> dict:
    """How many VL tokens `concat` appends: `concat_tokens` (0 = all), within the caption limit."""
    budget = limit - text_tokens
    if budget < 1:
        raise ValueError(f"blend_mode='concat': the prompt's {text_tokens} tokens fill the caption limit of {limit}, "
                         f"leaving no room for VL tokens: shorten the prompt or use another blend_mode.")
    wanted = request.concat_tokens or available
    count = min(wanted, budget)
    if count < wanted:
        warnings.append(f"blend_mode='concat': {wanted} VL tokens do not fit beside the prompt's {text_tokens} "
                        f"within the caption limit of {limit}: {count} appended.")
    resampled = None
    if count != available:
        resampled = f"{available} -> {count} ({blend.length_mode_used(available, count, request.length_mode)})"
    return {"text_tokens": text_tokens, "vl_tokens_available": available, "vl_tokens": count,
            "caption_limit": limit, "budget": budget, "resampled": resampled}


def _blend(manager, request: VLRequest, text, length: int, per_reference, weights, neutral_parts, source,
           token_weights, report: dict):
    """Statistics alignment (to `length` tokens) and mixing with the text embeddings; fills the
    report's stats."""
    ref = manager.reference_stats(request.hidden_layer)
    # Token-wise statistics (outliers, per-dim) from every weighted VL token at full resolution,
    # applied before length alignment, so a clamp meets the values it was fitted on.
    transform = blend.fit_statistics(
        source, None, text, ref, scale_to_text=request.scale_to_text, normalization=request.normalization,
        outlier_mode=request.outlier_mode, threshold=request.outlier_threshold, weights=token_weights)

    def mapped(parts):
        return [(transform.apply(seq), w) for seq, w in parts]

    vl_seq = _align([mapped(p) for p in per_reference], weights, length, request.length_mode)
    target = request.target_std if request.target_std > 0 else float(text.std())
    scale = request.scale_to_text and request.normalization in ("global", "hybrid")
    factor = blend.global_factor(vl_seq, target) if scale else 1.0
    aligned = vl_seq * factor
    neutral = None
    if neutral_parts is not None:
        neutral = blend.weighted_sum(mapped(neutral_parts), length, request.length_mode) * factor
    style = None
    if request.blend_mode in ADAIN_MODES:  # the VL's statistics: the whole (scaled) extraction
        full = transform.apply(source)
        if scale:
            full = full * target / (float(blend.moments(full, token_weights, per_dim=False)[1]) + blend.EPS)
        style = blend.moments(full, token_weights, per_dim=request.blend_mode == "adain_per_dim")
    text_part, vl_part = blend.components(text, aligned, request.alpha, request.blend_mode, neutral, style)
    mixed = text_part + vl_part
    report["stats"] = {
        "text": blend.sequence_stats(text, ref),
        "vl_before_scaling": blend.sequence_stats(source, ref, token_weights),
        "vl_after_scaling": blend.sequence_stats(aligned, ref),
        "blend": blend.sequence_stats(mixed),
    }
    report["outlier_dims"] = transform.outlier_dims  # found on vl_before_scaling: the one list
    report["masked_dims"] = transform.outlier_dims if request.outlier_mode != "none" else []
    return mixed, text_part, vl_part


def vl_generate(manager: ModelManager, request: VLRequest, references: list,
                structure_image=None, control_image=None, mask_image=None) -> GenerationResult:
    """VL-conditioned generation: img2img from the structure image (default: the first reference)
    at `strength`, or txt2img when strength is 1.0 (which would ignore any init image anyway).
    A `control_image` (at strength 1.0) sets the layout through the ControlNet, the blend the style;
    a `mask_image` restyles only its white part of the structure image (at strength 1.0 from noise)."""
    img2img = request.strength < 1.0 or mask_image is not None
    check_inputs(img2img, control_image, mask_image, request.strength)  # before the VL model runs
    conditioning = condition(manager, request, references)
    init = None
    if img2img:
        init = structure_image if structure_image is not None else references[0]
    result = run(manager, request, init, encoding=conditioning.encoding, control_image=control_image,
                 mask_image=mask_image)
    result.metadata["vl"]["structure_image"] = structure_image is not None
    return result


def export(conditioning: Conditioning, request: VLRequest, path) -> Path:
    """The conditioning as `.safetensors`: the blended `prompt_embeds` (ready for diffusers), the
    text embeddings, each raw extraction with its token types, and the request and report as JSON."""
    tensors = {"prompt_embeds": conditioning.encoding.prompt_embeds.float().contiguous()}
    if conditioning.encoding.encoded.embeds is not None:  # None when the text encoder was not needed
        tensors["text_embeds"] = conditioning.encoding.encoded.embeds.float().contiguous()
    for i, ex in enumerate(conditioning.extractions):
        tensors[f"extraction_{i}.embeds"] = ex.embeds.contiguous()
        tensors[f"extraction_{i}.is_image"] = ex.is_image.to(torch.uint8)
    metadata = {"request": json.dumps(request.to_dict()), "report": json.dumps(conditioning.report),
                "params": json.dumps([asdict(ex.params) for ex in conditioning.extractions])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path

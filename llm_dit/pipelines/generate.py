"""txt2img and img2img: request -> embeddings -> diffusers pipeline -> image + metadata.

The pipeline call is stock diffusers (`ZImagePipeline` / `ZImageImg2ImgPipeline`) with our
embeddings; two things differ on purpose:
- `shift` is applied through a per-call scheduler, so the knob really moves the sigmas;
- img2img strength follows BRIEF §6: int(N·s) forwards from schedule index N − int(N·s), passed
  to the stock pipeline as the tail of the sigma schedule (stock diffusers would start from pure
  noise for s > (N−1)/N and ignore the reference).
"""

from __future__ import annotations

import hashlib
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .. import __version__
from ..core.attention import attention_backends
from ..core.encode import Encoded, caption_limit, encode_text
from ..core.images import image_sha256, load_image, save_png
from ..serving import cancel
from ..core.devices import input_device
from ..runtime import limits
from ..runtime.models import ModelManager
from ..serving.outputs import OutputFolder
from ..core.prompt import format_chat
from ..core.templates import get_template
from ..core.variants import variant_warnings
from .control import check_inputs, control_map, window, windowed
from .inpaint import keep_unmasked, start_latents
from ..serving.timeline import Timeline
from ..core.request import GenerationRequest, field_meta, parse_loras, scheduled_steps, strength_forwards, validate


def base_sigmas(num_inference_steps: int) -> list[float]:
    """Z-Image's unshifted schedule, linspace(1, 1/N, N) (as diffusers builds it)."""
    return torch.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps).tolist()


def make_scheduler(config, shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(config, shift=shift, use_dynamic_shifting=False)


def shifted_sigmas(num_inference_steps: int, shift: float, config=None) -> list[float]:
    """The N sigmas a txt2img run visits, as the scheduler computes them for this shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = make_scheduler(config or FlowMatchEulerDiscreteScheduler().config, shift)
    scheduler.set_timesteps(sigmas=base_sigmas(num_inference_steps))
    return scheduler.sigmas[:-1].tolist()


def img2img_plan(num_inference_steps: int, strength: float, shift: float = 3.0) -> dict:
    """Forwards, start index and start sigma of an img2img run (BRIEF §6)."""
    forwards = strength_forwards(num_inference_steps, strength)
    start = num_inference_steps - forwards
    sigmas = shifted_sigmas(num_inference_steps, shift)
    return {
        "forwards": forwards,
        "start_index": start,
        "start_sigma": sigmas[start] if forwards else None,
        "reference_weight": 1.0 - sigmas[start] if forwards else None,
    }


@dataclass
class GenerationResult:
    image: Image.Image
    seed: int
    metadata: dict = field(default_factory=dict)

    def a1111_parameters(self) -> str:
        r = self.metadata["request"]
        line = (
            f"Steps: {r['num_inference_steps']}, Sampler: Euler (flow match), "
            f"Schedule shift: {r['shift']}, CFG scale: {r['guidance_scale']}, Seed: {self.seed}, "
            f"Size: {r['width']}x{r['height']}, Model: {self.metadata['model']}"
        )
        if "init_image" in self.metadata:  # img2img, or VL from a reference
            line += f", Denoising strength: {r['strength']}"
        for lora in self.metadata["loras"]:
            line += f", Lora: {lora['name']}:{lora['scale']}"
        return f"{r['prompt']}\nNegative prompt: {r['negative_prompt']}\n{line}"

    def save(self, folder: str | Path | OutputFolder, name: str | None = None) -> Path:
        """Save as PNG with both metadata chunks, atomically and never over an existing file; the
        default name carries time, mode and seed. A disk error raises ValueError naming the folder."""
        out = folder if isinstance(folder, OutputFolder) else OutputFolder(folder)
        stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{self.metadata['mode']}-{self.seed}"
        return out.write(f"{stem}.png", lambda tmp: save_png(self.image, tmp, self.a1111_parameters(), self.metadata))


def _versions() -> dict:
    import diffusers
    import transformers

    return {"llm_dit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def _adapter_name(path: str) -> str:
    return "lora_" + hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:12]


def _apply_loras(pipe, loras: list[tuple[str, float]]) -> None:
    """Load new LoRA files (diffusers' loader), activate exactly the requested ones and delete the
    adapters no longer requested, so the shared DiT carries nothing a past request chose."""
    loaded = set(pipe.get_list_adapters().get("transformer", []))
    stale = loaded - {_adapter_name(p) for p, _ in loras}
    if stale:
        pipe.delete_adapters(sorted(stale))
    if not loras:
        return
    for path, _ in loras:
        name = _adapter_name(path)
        if name not in loaded:
            try:
                pipe.load_lora_weights(path, adapter_name=name)
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"loras: {Path(path).stem!r} could not be loaded as a Z-Image LoRA "
                                 f"({type(err).__name__}): use a LoRA made for Z-Image.") from err
    pipe.enable_lora()
    pipe.set_adapters([_adapter_name(p) for p, _ in loras], [s for _, s in loras])


def attention_backend_of(transformer) -> str:
    """The backend diffusers' attention processors are set to (unset means `native`)."""
    for module in transformer.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is not None:
            return getattr(backend, "value", str(backend))
    return "native"


def _apply_attention(pipe, backend: str) -> None:
    if attention_backend_of(pipe.transformer) == backend:
        return
    try:
        pipe.transformer.set_attention_backend(backend)
    except Exception as err:  # noqa: BLE001 - missing kernels, wrong device, no hub access...
        pipe.transformer.set_attention_backend("native")
        raise ValueError(f"attention_backend={backend!r} is not available here ({type(err).__name__}): "
                         f"use 'native'.") from err


def _check_size(request: GenerationRequest, transformer) -> None:
    limits.check_size(request.height, request.width, limits.from_config(transformer.config))


def _prepare_init_latents(pipe, image: Image.Image, height: int, width: int) -> torch.Tensor:
    """The reference as scaled VAE latents (`latent_dist.mode()`), encoded on the VAE's device."""
    fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(fitted, height=height, width=width)
    param = next(vae.parameters())
    with torch.no_grad():
        latents = vae.encode(pixels.to(input_device(vae), param.dtype)).latent_dist.mode()
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def _decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Latents -> images, one VAE decode per image (so a batch decodes exactly like single runs).
    Made contiguous first: the inpaint pipeline's mask blend hands back a channels-last layout, and
    the decoder's convolutions round differently on it (1 level on some pixels)."""
    vae = pipe.vae
    param = next(vae.parameters())
    latents = latents.contiguous().to(input_device(vae), param.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    images = []
    with torch.no_grad():
        for item in latents.split(1):
            images += pipe.image_processor.postprocess(vae.decode(item, return_dict=False)[0], output_type="pil")
    return images


def _step_callback(steps_run: list, embeds_at=None, steps: int = 0):
    """Record each step's timestep; with `embeds_at` (step-scheduled conditioning), hand the
    pipeline the next step's caption embeddings; stop the loop at the next step once the client
    went away."""

    def callback(pipe, i, timestep, kwargs):
        steps_run.append(float(timestep))
        if cancel.requested():
            pipe._interrupt = True  # diffusers' own stop flag: the remaining steps are skipped
        if embeds_at is not None and i + 1 < steps:
            return {"prompt_embeds": embeds_at(i + 1)}
        return {}

    return callback


@dataclass
class PromptEncoding:
    """What the DiT is conditioned on: the text side, and the sequence actually passed (the text
    embeddings, or a VL blend made from them), plus anything that made it worth recording."""

    chat: str
    encoded: Encoded
    negative: Encoded | None
    prompt_embeds: torch.Tensor
    timeline: Timeline  # the stages so far (load, VL extract, offload, encode)
    mode: str | None = None  # overrides txt2img/img2img in the metadata (e.g. "vl")
    metadata: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    # Step-scheduled conditioning: `prompt_embeds` only on the steps in `window` (fractions of the
    # steps run), `outside` (e.g. the text embeddings) on the others. None: every step.
    outside: torch.Tensor | None = None
    window: tuple = (0.0, 1.0)

    def steps(self, forwards: int) -> list[bool]:
        """Per step run: True where `prompt_embeds` conditions it, False where `outside` does."""
        if self.outside is None:
            return [True] * forwards
        chosen = set(scheduled_steps(forwards, *self.window))
        return [i in chosen for i in range(forwards)]


def prompt_parts(request: GenerationRequest) -> dict:
    """System prompt, thinking, assistant content and think flag: the request's own, with a style
    template (if named) filling the parts the request leaves empty."""
    parts = {"system_prompt": request.system_prompt, "thinking_content": request.thinking_content,
             "assistant_content": request.assistant_content, "force_think_block": request.force_think_block}
    if request.template:
        t = get_template(request.template, "style")
        parts = {"system_prompt": request.system_prompt or t.system_prompt,
                 "thinking_content": request.thinking_content or t.thinking_content,
                 "assistant_content": request.assistant_content or t.assistant_content,
                 "force_think_block": request.force_think_block or t.add_think_block}
    return parts


def chat_parts(request: GenerationRequest) -> dict:
    """`format_chat`'s arguments for the request: its prompt and `prompt_parts`."""
    return {"prompt": request.prompt, "strip_quotes": request.strip_quotes, **prompt_parts(request)}


def _encode_cached(manager: ModelManager, parts: dict, request: GenerationRequest, limit: int) -> Encoded:
    """The chat text of `parts` (`format_chat`'s arguments) through the text encoder (this
    instance's, or the one at --text-encoder-url), unless the same text was encoded before."""
    text = format_chat(**parts)
    key = (manager.text_encoder_id, text, request.hidden_layer, request.long_prompt_mode, limit)
    hit = manager.text_cache.get(key)
    if hit is None:
        if manager.remote_text:
            hit = manager.remote_text.encode(parts, request.hidden_layer, request.long_prompt_mode, limit,
                                             manager.text_encoder_config())
        else:
            pipe, lm = manager.pipeline(), manager.language_model()
            hit = encode_text(lm.model, pipe.tokenizer, text, limit, request.hidden_layer, request.long_prompt_mode,
                              max_tokens=field_meta("prompt")["max_tokens"])
        hit = replace(hit, embeds=hit.embeds.cpu())  # the cache never holds GPU memory
        manager.text_cache.put(key, hit)
    return replace(hit, embeds=hit.embeds.clone())


def encode_prompt(manager: ModelManager, request: GenerationRequest,
                  timeline: Timeline | None = None) -> PromptEncoding:
    """The request's chat text through the text encoder (and the negative prompt under CFG)."""
    timeline = timeline or Timeline()
    if not manager.is_loaded:
        with timeline.stage("load"):
            manager.pipeline()
    with timeline.stage("encode"):
        limit = caption_limit(manager.pipeline().transformer)
        parts = chat_parts(request)
        chat = format_chat(**parts)
        encoded = _encode_cached(manager, parts, request, limit)
        negative = None
        if request.guidance_scale > 0:
            negative = _encode_cached(manager, {"prompt": request.negative_prompt}, request, limit)
    return PromptEncoding(chat, encoded, negative, encoded.embeds, timeline)


def count_prompt(manager: ModelManager, request: GenerationRequest,
                 timeline: Timeline | None = None) -> PromptEncoding:
    """The request's chat text and its token count from the tokenizer alone: the text encoder
    neither loads nor runs. For a caption that does not use the text embeddings (pure VL)."""
    timeline = timeline or Timeline()
    if not manager.is_loaded:
        with timeline.stage("load"):
            manager.pipeline()
    pipe = manager.pipeline()
    limit = caption_limit(pipe.transformer)
    chat = format_chat(**chat_parts(request))
    count = len(pipe.tokenizer(chat, add_special_tokens=False).input_ids)
    encoded = Encoded(None, count, limit, request.long_prompt_mode, count > limit)
    return PromptEncoding(chat, encoded, None, None, timeline)


def resolve_seed(request: GenerationRequest) -> GenerationRequest:
    """The request with `seed = -1` replaced by a drawn seed (in [0, 2**32))."""
    if int(request.seed) != -1:
        return replace(request, seed=int(request.seed))
    return replace(request, seed=random.randrange(2**32))


BATCH_KEY = ("height", "width", "num_inference_steps", "shift", "guidance_scale", "loras", "attention_backend",
             "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end", "control_preprocess")


def run(manager: ModelManager, request: GenerationRequest, image=None,
        encoding: PromptEncoding | None = None, control_image=None, mask_image=None) -> GenerationResult:
    """Generate one image: txt2img when `image` is None, img2img from `image` otherwise.
    `encoding` supplies the caption embeddings (e.g. a VL blend); by default the prompt's.
    `control_image` (txt2img only) sets the layout through the ControlNet (--controlnet-path);
    `mask_image` (img2img only) inpaints: white is redrawn, black kept from `image`."""
    return run_batch(manager, [request], [image], [encoding], control_image, mask_image)[0]


def run_batch(manager: ModelManager, requests: list, images: list, encodings: list,
              control_image=None, mask_image=None) -> list[GenerationResult]:
    """Several images in one pipeline call. They must agree on size, steps, shift, guidance,
    LoRAs, attention, control settings and (for img2img) strength; each keeps its own seed, prompt
    and init image, and comes out as its single run would (within float tolerance of batched
    kernels). A `control_image` or `mask_image` is shared by the batch."""
    img2img = images[0] is not None
    first = requests[0]
    for i, (request, image) in enumerate(zip(requests, images)):
        validate(request, img2img=img2img, policy=manager.policy)
        keys = BATCH_KEY + (("strength",) if img2img else ())
        differ = [k for k in keys if getattr(request, k) != getattr(first, k)]
        if differ or (image is not None) != img2img:
            what = ", ".join(f"{k}={getattr(request, k)!r} vs {getattr(first, k)!r}" for k in differ) or "init image"
            raise ValueError(f"batch item {i} differs from item 0 ({what}): a batch must share "
                             f"{', '.join(keys)} and init-image use; run differing requests separately.")
    check_inputs(img2img, control_image, mask_image, first.strength)
    inits = [load_image(image, field="image") if img2img else None for image in images]
    mask = load_image(mask_image, field="mask_image").convert("L") if mask_image is not None else None
    control = control_map(control_image, first) if control_image is not None else None
    warnings = variant_warnings(manager.variant, first.num_inference_steps, first.guidance_scale)
    loras = parse_loras(first.loras, manager.policy.lora_path)
    requests = [resolve_seed(r) for r in requests]
    encodings = [e or encode_prompt(manager, r) for r, e in zip(requests, encodings)]
    shared = Timeline()
    with manager.generation_lock:  # an unload waits for this block; read the pipeline inside it
        pipe = manager.pipeline()
        transformer = pipe.transformer
        _check_size(first, transformer)
        _apply_attention(pipe, first.attention_backend)
        _apply_loras(pipe, loras)
        device, dtype = input_device(transformer), next(transformer.parameters()).dtype
        inside = [e.prompt_embeds.to(device, dtype) for e in encodings]
        outside = [e.outside.to(device, dtype) if e.outside is not None else None for e in encodings]
        tiled = manager.apply_vae_tiling(first.height, first.width)
        scheduler = make_scheduler(pipe.scheduler.config, first.shift)
        sigmas = base_sigmas(first.num_inference_steps)
        extra = {}
        if img2img:
            forwards = strength_forwards(first.num_inference_steps, first.strength)
            sigmas = sigmas[first.num_inference_steps - forwards:]
            if mask is not None:
                size = (first.width, first.height)
                mask = ImageOps.fit(mask, size, method=Image.Resampling.NEAREST)  # cropped as the init image is
                fitted = [ImageOps.fit(init, size, method=Image.Resampling.LANCZOS) for init in inits]
            if mask is not None and control is not None:  # from pure noise (strength 1.0, checked above)
                view = manager.controlnet_inpaint_view(scheduler)
                extra = {"image": fitted, "mask_image": mask, "control_image": control,
                         "controlnet_conditioning_scale": first.controlnet_conditioning_scale}
                control_steps, control_calls = window(first, len(sigmas)), []
            elif mask is not None:  # the pipeline encodes the init images for the kept region; it starts as img2img
                view = manager.inpaint_view(scheduler)
                with shared.stage("vae_encode"):
                    latents = torch.cat([_prepare_init_latents(pipe, init, first.height, first.width) for init in inits])
                extra = {"image": fitted, "mask_image": mask, "strength": 1.0,
                         "latents": start_latents(scheduler, latents, sigmas, [r.seed for r in requests])}
            else:
                view = manager.view("img2img", scheduler)
                with shared.stage("vae_encode"):
                    latents = [_prepare_init_latents(pipe, init, first.height, first.width) for init in inits]
                extra = {"image": torch.cat(latents), "strength": 1.0}
            if forwards == first.num_inference_steps and mask is None:
                warnings.append("strength runs every step from sigma 1.0: the reference image is ignored.")
        elif control is not None:
            view = manager.controlnet_view(scheduler)
            extra = {"control_image": control, "controlnet_conditioning_scale": first.controlnet_conditioning_scale}
            control_steps, control_calls = window(first, len(sigmas)), []
        else:
            view = manager.view("txt2img", scheduler)
        schedules = [e.steps(len(sigmas)) for e in encodings]

        def embeds_at(step: int) -> list:
            return [a if on[step] else b for a, b, on in zip(inside, outside, schedules)]

        call = {"prompt_embeds": embeds_at(0)}
        if first.guidance_scale > 0:
            call["negative_prompt_embeds"] = [e.negative.embeds.to(device, dtype) for e in encodings]
        scheduled = not all(all(on) for on in schedules)
        steps_run = []

        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
        held = windowed(view.controlnet, control_steps, control_calls) if control is not None else nullcontext()
        with shared.stage("denoise"), held:
            latents = view(
                **call, **extra, height=first.height, width=first.width,
                num_inference_steps=len(sigmas), sigmas=sigmas, guidance_scale=first.guidance_scale,
                generator=generators if len(generators) > 1 else generators[0], output_type="latent",
                callback_on_step_end=_step_callback(steps_run, embeds_at if scheduled else None, len(sigmas)),
            ).images
        cancel.check()  # a client that went away gets nothing decoded or saved
        with shared.stage("decode"):
            pictures = _decode(pipe, latents)
            if mask is not None:
                pictures = [keep_unmasked(mask, init, picture) for init, picture in zip(fitted, pictures)]
    run_sigmas = scheduler.sigmas[: len(steps_run)].tolist()
    results = []
    for request, encoding, init, picture in zip(requests, encodings, inits, pictures):
        timeline = Timeline(encoding.timeline.stages + shared.stages)
        manager.last_timeline = timeline.to_list()
        encoded = encoding.encoded
        notes = warnings + encoding.warnings + ([encoded.describe()] if encoded.long_prompt_applied else [])
        metadata = {
            "mode": encoding.mode or ("img2img" if img2img else "txt2img"),
            "request": request.to_dict(),
            "seed": request.seed,
            "model": manager.zimage_model_id,
            "checkpoint": manager.checkpoint_info(),
            "versions": _versions(),
            "chat_text": encoding.chat,
            "template": request.template or None,
            "sigmas": [round(x, 6) for x in run_sigmas],
            "start_sigma": round(run_sigmas[0], 6),
            "forwards": len(steps_run),
            "batch_size": len(requests),
            "tokens": {"count": encoded.token_count, "caption_limit": encoded.caption_limit,
                       "used": int(encoding.prompt_embeds.shape[0]),
                       "long_prompt": encoded.describe() if encoded.long_prompt_applied else None},
            "loras": [{"name": Path(p).stem, "scale": x} for p, x in loras],
            "timings": {**timeline.seconds(), "total": round(sum(x.seconds for x in timeline.stages), 4)},
            "timeline": timeline.to_list(),
            "memory": {**manager.memory_levers(), "vae_tiling": tiled},
            "warnings": notes,
        }
        if img2img:
            metadata["init_image"] = {"sha256": image_sha256(init), "size": list(init.size)}
        if mask is not None:
            metadata["mask_image"] = {"sha256": image_sha256(mask),
                                      "redrawn_fraction": round(float((np.asarray(mask) >= 128).mean()), 4)}
        if control is not None:
            metadata["control"] = {"controlnet": manager.controlnet_id, "map_sha256": image_sha256(control),
                                   "steps": [i for i in control_steps if i < len(steps_run)]}
        if encoding.outside is not None:
            on = encoding.steps(len(steps_run))
            metadata["scheduled_steps"] = {"window": list(encoding.window),
                                           "conditioned": [i for i, x in enumerate(on) if x],
                                           "outside": [i for i, x in enumerate(on) if not x]}
        metadata.update(encoding.metadata)
        remote = {name: encoder.shown for name, encoder, used in (
            ("text_encoder", manager.remote_text, True), ("vl", manager.remote_vl, "vl" in metadata)) if encoder and used}
        if remote:  # another instance encoded the prompt or extracted the references
            metadata["remote"] = remote
        results.append(GenerationResult(picture, request.seed, metadata))
    return results


def txt2img(manager: ModelManager, request: GenerationRequest) -> GenerationResult:
    return run(manager, request)


def img2img(manager: ModelManager, request: GenerationRequest, image) -> GenerationResult:
    if image is None:
        raise ValueError("image: img2img needs an init image: upload one, or use txt2img.")
    return run(manager, request, image)



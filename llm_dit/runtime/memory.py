"""The placement plan: where each model goes and which memory levers it needs, decided before loading.

Sizes come from the checkpoints' own metadata (safetensors shard headers, else the index's
metadata, else the config instantiated on the meta device), never from loading weights. The
planner walks a ladder from the fastest placement to the leanest and takes the first one whose
estimated peak fits the budget:

    all on the GPU -> text encoder on the CPU -> model offload -> int8 DiT (text encoder on the CPU)
    -> int8 with model offload -> group offload (block level) -> sequential offload

Exact placements come before quantized ones (int8 weight-only changes the pictures a little). The
Qwen3-VL model gets its own small ladder: beside the resident models, alone on the GPU while the
others are parked on the CPU, the same in int8, else on the CPU. Explicit settings override the
plan field by field. All sizes are in GiB (a "24 GB" card has 24 GiB). The activation estimates
come from the traced forward passes at the released sizes (`runtime/trace.py` -> traced.json):
bytes per value of tokens x width, and on the math attention path per attention score.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)
GiB = 2**30
OFFLOADS = ("none", "model", "group", "sequential")
QUANTIZATIONS = ("none", "int8", "fp8", "nf4")
QUANT_BYTES = {"int8": 1.0, "fp8": 1.0, "nf4": 0.56}  # per parameter (nf4: 4 bits + scales)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
RESERVE_GIB = 1.0  # CUDA context, allocator slack
CAPTION_TOKENS = 512
PARTS = ("text_encoder", "transformer", "vae")
_INDEXES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json")
_WEIGHTS = ("model.safetensors", "diffusion_pytorch_model.safetensors")


@dataclass(frozen=True)
class Component:
    """One model's size, read from its checkpoint, and the config numbers the estimates need."""
    name: str
    params: int
    source: str  # which metadata the count came from
    config: dict = field(default_factory=dict, compare=False, repr=False)
    held_bytes: int | None = None  # held as stored whatever the run dtype (a GGUF DiT's quantized blocks)


def _header_params(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # reads the JSON header only
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def _meta_params(folder: Path, config: dict) -> int:
    """Parameters of the model a config describes, built on the meta device (no memory used)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if "_class_name" in config:  # a diffusers model
            import diffusers

            model = getattr(diffusers, config["_class_name"]).from_config(config)
        else:
            import transformers

            hf_config = transformers.AutoConfig.from_pretrained(str(folder))
            model = getattr(transformers, hf_config.architectures[0])._from_config(hf_config)
            model.tie_weights()  # tied weights count once, as checkpoints store them
    return sum(p.numel() for p in model.parameters())


def _headers(folder: Path, files: list[str]) -> tuple[int | None, str]:
    """Parameters from the files' headers, or (None, why) naming the first file that cannot be
    read (a shard cut short): the plan falls back and start-up goes on."""
    from safetensors import SafetensorError

    total = 0
    for name in files:
        try:
            total += _header_params(folder / name)
        except (SafetensorError, OSError, ValueError) as err:
            why = f"{folder.name}/{name} could not be read ({type(err).__name__}: damaged? re-download it)"
            log.warning("memory plan: %s; sizes from the checkpoint's other metadata", why)
            return None, why
    return total, ""


def read_component(name: str, folder: Path) -> Component:
    """The parameter count of the checkpoint in `folder`, from its metadata: shard headers, else
    the index's totals, else the config on the meta device (a file that cannot be read is named)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    problem = ""
    for index_name in _INDEXES:
        index_path = folder / index_name
        if index_path.exists():
            index = json.loads(index_path.read_text())
            shards = sorted(set(index["weight_map"].values()))
            if all((folder / s).exists() for s in shards):
                params, problem = _headers(folder, shards)
                if params is not None:
                    return Component(name, params, f"{index_name} + shard headers", config)
            note = f" ({problem})" if problem else ""
            meta = index.get("metadata", {})
            if "total_parameters" in meta:
                return Component(name, int(meta["total_parameters"]), f"{index_name} total_parameters{note}", config)
            if "total_size" in meta:
                stored = DTYPE_BYTES.get(config.get("dtype") or config.get("torch_dtype"), 2)
                return Component(name, int(meta["total_size"]) // stored, f"{index_name} total_size{note}", config)
    for weights_name in _WEIGHTS:
        if (folder / weights_name).exists():
            params, problem = _headers(folder, [weights_name])
            if params is not None:
                return Component(name, params, f"{weights_name} header", config)
    note = f" ({problem})" if problem else ""
    return Component(name, _meta_params(folder, config), f"config.json on the meta device{note}", config)


def with_transformer_file(parts: dict[str, Component], path: str) -> dict[str, Component]:
    """The DiT as a `--transformer-file` holds it, from the file's header: a GGUF file keeps its
    quantized bytes; a safetensors file (bf16, fp16, fp8) is cast to the run dtype at load, so it
    counts by its parameters like the folder's."""
    from .checkpoints import file_format, weights_bytes

    name, dit = Path(path).name, parts["transformer"]
    if file_format(path) == "gguf":
        dit = replace(dit, held_bytes=weights_bytes(path), source=f"{name} tensor sizes (GGUF, held quantized)")
    else:
        dit = replace(dit, params=_header_params(Path(path)), source=f"{name} header")
    return {**parts, "transformer": dit}


def read_controlnet(path: str) -> Component | None:
    """The ControlNet's size from its folder or single file; None when it is not on disk yet."""
    file = Path(path).expanduser()
    if file.is_file():
        return Component("controlnet", _header_params(file), f"{file.name} header")
    folder = metadata_folder(path)
    return read_component("controlnet", folder) if folder is not None else None


def read_components(zimage: Path, vl: Path | None) -> dict[str, Component]:
    """Sizes of the Z-Image parts (and the Qwen3-VL model) from checkpoint folders."""
    parts = {name: read_component(name, Path(zimage) / name) for name in PARTS}
    if vl is not None:
        parts["vl"] = read_component("vl", Path(vl))
    return parts


# ---- estimates (GiB) -------------------------------------------------------------------------
def weights_gib(part: Component, dtype_bytes: int, quant: str = "none") -> float:
    if part.held_bytes is not None:
        return part.held_bytes / GiB
    per_param = QUANT_BYTES.get(quant, dtype_bytes)
    return part.params * per_param / GiB


def _text_config(part: Component) -> dict:
    return part.config.get("text_config", part.config)


TRACED = Path(__file__).with_name("traced.json")  # written by `python -m llm_dit.runtime.trace`


@functools.cache
def _traced() -> dict:
    return json.loads(TRACED.read_text())["fit"]


def activation_gib(part: Component, pixels: int, dtype_bytes: int, tiled: bool = False, vl_pixels: int = 0,
                   fused: bool = True) -> float:
    """Working memory of one forward, from the traced bytes per value (runtime/traced.json): a term
    in tokens x width, plus on the math attention path (`fused` False) what the heads x tokens²
    scores add."""
    if part.name == "controlnet":
        return _hints_gib(part, pixels, dtype_bytes)
    c, fit = part.config, _traced()[part.name]
    extra = 0.0
    if part.name == "transformer":
        tokens = pixels // 256 + CAPTION_TOKENS  # 8x VAE, 2x2 patches
        linear, scores = tokens * c["dim"], c["n_heads"] * tokens**2
    elif part.name == "vae":
        tile = c.get("sample_size", 1024)
        tile = (tile[0] if isinstance(tile, (list, tuple)) else tile) ** 2
        px = min(pixels, tile) if tiled else pixels
        linear, scores = px * c["block_out_channels"][0], (px / 64) ** 2  # mid-block: one head over latents
        extra = fit["tiled"] * pixels if tiled and pixels > tile else 0.0  # the decoded tiles, kept to blend
    else:
        text = _text_config(part)
        tokens = CAPTION_TOKENS + (vl_pixels // 1024 if part.name == "vl" else 0)
        linear, scores = tokens * text["hidden_size"], text["num_attention_heads"] * tokens**2
        if part.name == "vl":
            vision, patches = c["vision_config"], vl_pixels // 256
            linear += patches * vision["hidden_size"]
            scores += vision["num_heads"] * patches**2
    added = 0.0 if fused else max(0.0, fit["math_linear"] * linear + fit["math"] * scores)  # the N x N scores
    values = fit["fused"] * linear + added + extra
    return values * dtype_bytes / GiB


DIT_BLOCK_PARAMS = 6_154_908_736 / 34  # the released DiT: 30 layers and 2 + 2 refiner layers


def _hints_gib(part: Component, pixels: int, dtype_bytes: int) -> float:
    """What a ControlNet adds while the DiT runs: one residual (tokens x width) per control block,
    held from the ControlNet's forward to the DiT's; its blocks are the DiT's, so their number is
    its parameters over one DiT block's."""
    blocks = max(1, round(part.params / DIT_BLOCK_PARAMS))
    return blocks * (pixels // 256 + CAPTION_TOKENS) * part.config.get("dim", 3840) * dtype_bytes / GiB


def _layers(part: Component) -> int:
    return part.config.get("n_layers") or _text_config(part).get("num_hidden_layers") or 4


@dataclass(frozen=True)
class Placement:
    """What the planner decides (and explicit settings override)."""
    offload: str = "none"
    text_encoder_on_gpu: bool = True  # on the plan's device (else on the CPU)
    quantize: dict = field(default_factory=lambda: {"transformer": "none", "text_encoder": "none", "vl": "none"})
    vl: str = "gpu"  # "gpu" beside the others, "gpu-park" (others parked on the CPU), "cpu", "other" (device)
    vae_tiling: bool = False
    devices: dict = field(default_factory=dict)  # explicit device settings (component -> device)


def peaks(parts: dict[str, Component], placement: Placement, pixels: int, dtype_bytes: int,
          vl_pixels: int, fused: bool = True) -> dict[str, float]:
    """Estimated peak GPU memory (GiB, with the reserve) while generating and while extracting
    (`fused`: attention by a fused kernel, as on CUDA; else the math path's N x N scores)."""
    q = placement.quantize
    size = {n: weights_gib(p, dtype_bytes, q.get(n, "none")) for n, p in parts.items()}
    act = {n: activation_gib(p, pixels, dtype_bytes, placement.vae_tiling, vl_pixels, fused) for n, p in parts.items()}
    controlnet = size.pop("controlnet", 0.0)  # on the DiT's input device in every mode, never offloaded
    act["transformer"] += act.pop("controlnet", 0.0)  # its residuals, held into the DiT's forward
    on_gpu = ["transformer", "vae"] + (["text_encoder"] if placement.text_encoder_on_gpu else [])
    if placement.offload == "none":
        resident = sum(size[n] for n in on_gpu)
        generate = resident + max(act[n] for n in on_gpu)
    elif placement.offload == "model":  # one model on the GPU at a time; the VAE stays
        resident = size["vae"]
        generate = resident + max(max(size[n] + act[n] for n in on_gpu if n != "vae"), act["vae"])
    else:  # group: ~3 blocks in flight (streams prefetch); sequential: one layer
        blocks = 3 if placement.offload == "group" else 1
        resident = size["vae"]
        generate = resident + max(size[n] * blocks / _layers(parts[n]) + act[n] for n in on_gpu if n != "vae")
        generate = max(generate, resident + act["vae"])
    resident, generate = resident + controlnet, generate + controlnet
    result = {"generate": generate + RESERVE_GIB}
    if "vl" in parts and placement.vl in ("gpu", "gpu-park"):
        beside = resident if placement.vl == "gpu" else size["vae"]  # parking leaves the VAE in place
        result["vl"] = beside + size["vl"] + act["vl"] + RESERVE_GIB
    return result


LADDER = (
    ("all on the GPU", Placement()),
    ("text encoder on the CPU", Placement(text_encoder_on_gpu=False)),
    ("model offload", Placement(offload="model")),
    ("int8 DiT, text encoder on the CPU",
     Placement(text_encoder_on_gpu=False, quantize={"transformer": "int8", "text_encoder": "none", "vl": "none"})),
    ("int8 DiT and text encoder, model offload",
     Placement(offload="model", quantize={"transformer": "int8", "text_encoder": "int8", "vl": "none"})),
    ("group offload (block level)", Placement(offload="group")),
    ("sequential offload", Placement(offload="sequential")),
)
VL_LADDER = (("gpu", "none"), ("gpu-park", "none"), ("gpu", "int8"), ("gpu-park", "int8"))


@dataclass(frozen=True)
class Plan:
    budget_gib: float | None  # None: no accelerator, everything on the CPU
    device: str
    name: str
    placement: Placement
    fits: bool
    peaks_gib: dict
    sizes_gib: dict
    sources: dict
    reasons: tuple[str, ...]

    def lines(self) -> list[str]:
        """The plan in words, for the start-up log and the Status tab."""
        p = self.placement
        head = (f"memory plan: {self.name}" + ("" if self.device == "cpu" else f" on {self.device}") +
                (f" (budget {self.budget_gib:.1f} GiB)" if self.budget_gib is not None else ""))
        quant = ", ".join(f"{k} {v}" for k, v in p.quantize.items() if v != "none") or "none"
        text_encoder = p.devices.get("text_encoder") or (self.device if p.text_encoder_on_gpu else "cpu")
        vl = p.devices.get("vl") or {"gpu": self.device, "gpu-park": f"{self.device} (others parked)"}.get(p.vl, p.vl)
        levers = (f"offload {p.offload}; text encoder on {text_encoder}; quantization {quant}; VL model on {vl}; "
                  f"VAE tiling {'on' if p.vae_tiling else 'auto'}")
        peak = ", ".join(f"{k} {v:.1f} GiB" for k, v in self.peaks_gib.items())
        sizes = ", ".join(f"{k} {v:.2f} GiB" if v >= 0.1 else f"{k} {v * 1024:.1f} MiB"
                          for k, v in self.sizes_gib.items())
        lines = [head, levers]
        if self.sizes_gib:
            lines += [f"estimated peaks: {peak or '—'}" + ("" if self.fits else " (does NOT fit)"),
                      f"weights at the run dtype: {sizes}",
                      "sizes read from: " + "; ".join(f"{k} {v}" for k, v in self.sources.items())]
        return lines + list(self.reasons)


def _explicit(placement: Placement, overrides: dict) -> tuple[Placement, list[str]]:
    """Apply the settings that were given explicitly (values other than "auto")."""
    reasons, changes, quant = [], {}, dict(placement.quantize)
    for key, value in overrides.items():
        if value in (None, "auto"):
            continue
        if key == "devices":  # explicit device strings: shown, and their models placed by them
            reasons += [f"{name} on {device} (set explicitly)" for name, device in value.items()]
            changes[key] = value
            continue
        if key not in ("text_encoder_on_gpu", "vl"):  # those two follow from the device settings
            reasons.append(f"{key}={value} set explicitly")
        if key.startswith("quantize_"):
            quant[key[len("quantize_"):]] = value
        else:
            changes[key] = value
    return replace(placement, quantize=quant, **changes), reasons


def plan(parts: dict[str, Component], budget_gib: float | None, device: str = "cuda", dtype_bytes: int = 2,
         height: int = 1024, width: int = 1024, vl_pixels: int = 1024 * 1024, tiling_pixels: int = 1536 * 1536,
         overrides: dict | None = None, quantizable: bool = True, can_park: bool = True) -> Plan:
    """The fastest placement whose estimated peak fits `budget_gib` (None = no accelerator).

    `can_park`: the VL model is unloaded after use, so the others may wait on the CPU meanwhile."""
    pixels = height * width
    fused = device.startswith("cuda")  # CUDA's flash / memory-efficient attention keep no N x N scores
    sizes = {n: weights_gib(p, dtype_bytes) for n, p in parts.items()}
    sources = {n: p.source for n, p in parts.items()}
    if budget_gib is None:
        placement, explicit = _explicit(Placement(vl="cpu"), overrides or {})
        return Plan(None, "cpu", "everything on the CPU", placement, True, {}, sizes, sources,
                    ("no accelerator: every model runs on the CPU", *explicit))
    reasons = []
    tiled = pixels > tiling_pixels
    chosen = None
    for name, candidate in LADDER:
        if not quantizable and any(v != "none" for v in candidate.quantize.values()):
            continue
        if parts["transformer"].held_bytes is not None and candidate.quantize["transformer"] != "none":
            continue  # a GGUF DiT is quantized already
        last = None
        for tiling in ((tiled,) if tiled else (False, True)):
            candidate_t = replace(candidate, vae_tiling=tiling, vl="cpu")
            peak = peaks(parts, candidate_t, pixels, dtype_bytes, vl_pixels, fused)["generate"]
            if peak == last:
                continue  # the image fits in one tile: tiling saves nothing here
            last = peak
            if peak <= budget_gib:
                chosen = (name + (" + VAE tiling" if tiling and not tiled else ""), candidate_t)
                break
            reasons.append(f"{name}{' + VAE tiling' if tiling else ''}: needs {peak:.1f} GiB > {budget_gib:.1f}")
        if chosen:
            break
    fits = chosen is not None
    name, placement = chosen or ("sequential offload (does not fit)", replace(LADDER[-1][1], vae_tiling=True, vl="cpu"))
    if tiled:
        reasons.append(f"VAE tiling: {height}x{width} is above {tiling_pixels:,} pixels")
    if "vl" in parts:
        placement = _place_vl(parts, placement, budget_gib, pixels, dtype_bytes, vl_pixels, quantizable, can_park,
                              reasons, fused)
    placement, explicit = _explicit(placement, overrides or {})
    peak = peaks(parts, placement, pixels, dtype_bytes, vl_pixels, fused)
    fits = fits and all(v <= budget_gib for v in peak.values())
    return Plan(budget_gib, device, name, placement, fits, {k: round(v, 2) for k, v in peak.items()},
                sizes, sources, tuple(reasons + explicit))


def _place_vl(parts, placement, budget, pixels, dtype_bytes, vl_pixels, quantizable, can_park, reasons, fused):
    for where, quant in VL_LADDER:
        if (quant != "none" and not quantizable) or (where == "gpu-park" and not can_park):
            continue
        candidate = replace(placement, vl=where, quantize={**placement.quantize, "vl": quant})
        need = peaks(parts, candidate, pixels, dtype_bytes, vl_pixels, fused)["vl"]
        if need <= budget:
            how = "beside the other models" if where == "gpu" else "on the GPU while the others are parked on the CPU"
            reasons.append(f"VL model {how}{' in int8' if quant != 'none' else ''} (needs {need:.1f} GiB)")
            return candidate
    reasons.append("VL model on the CPU: it does not fit on the GPU even alone in int8")
    return replace(placement, vl="cpu")


# ---- the plan for the app's settings ---------------------------------------------------------
def metadata_folder(source: str) -> Path | None:
    """A local folder holding the checkpoint's configs and indexes; None when not downloaded yet."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache (or not a hub id): no sizes to read
        return None


def accelerator(settings) -> str:
    """The device the plan budgets for: the DiT's device (auto: cuda, then mps, else cpu)."""
    import torch

    name = settings.transformer_device
    if name != "auto":
        return name
    if settings.zero_gpu or torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def budget_gib(settings, device: str) -> float | None:
    """The memory budget: the setting, or (auto) the free memory of `device`; None on the CPU."""
    import torch

    if device == "cpu" or (device.startswith("cuda") and not torch.cuda.is_available()):
        return None  # (a missing GPU is reported when the models load, with the fix)
    if settings.memory_budget != "auto":
        return float(settings.memory_budget)
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0] / GiB
    return torch.mps.recommended_max_memory() / GiB


def overrides(settings) -> dict:
    """The settings that override the plan (auto = let the plan decide). A model given another
    accelerator (e.g. the text encoder on cuda:1) does not count against this device's budget."""
    main = accelerator(settings)

    def same(device: str) -> bool | None:
        return None if device == "auto" else device == main or f"{device}:0" == main or device == f"{main}:0"

    vl_here = same(settings.vl_device)
    named = {n: getattr(settings, f"{n}_device") for n in ("text_encoder", "transformer", "vae", "vl")}
    devices = {n: d for n, d in named.items() if d != "auto"}
    text_encoder_here = same(settings.text_encoder_device)
    vl = None if vl_here is None else "gpu" if vl_here else "cpu" if settings.vl_device == "cpu" else "other"
    if settings.text_encoder_url:  # another instance encodes: no local text encoder to place
        devices["text_encoder"], text_encoder_here = "a remote instance", False
    if settings.vl_url:
        devices["vl"], vl = "a remote instance", "other"
    return {
        "devices": devices,
        "offload": settings.offload,
        "text_encoder_on_gpu": text_encoder_here,
        "vl": vl,
        "vae_tiling": {"auto": None, "on": True, "off": False}[settings.vae_tiling],
        "quantize_transformer": settings.quantize_transformer,
        "quantize_text_encoder": settings.quantize_text_encoder,
        "quantize_vl": settings.quantize_vl,
    }


def plan_for(settings, zimage_source: str, vl_source: str) -> Plan:
    """The plan for the app's settings, from the checkpoints' metadata (nothing is loaded)."""
    device = accelerator(settings)
    if settings.zero_gpu:
        placement, reasons = _explicit(Placement(), overrides(settings))
        return Plan(None, "cuda", "ZeroGPU: every model on cuda, placed at start-up", placement, True, {}, {}, {},
                    ("ZeroGPU forks a worker per call: no offload, no unloading, no runtime compilation", *reasons))
    zimage, vl = metadata_folder(zimage_source), metadata_folder(vl_source)
    budget = budget_gib(settings, device)
    if zimage is None or vl is None:
        placement, reasons = _explicit(Placement(vl="cpu" if device == "cpu" else "gpu"), overrides(settings))
        missing = "Z-Image" if zimage is None else "Qwen3-VL"
        return Plan(budget, device, "as set (no checkpoint metadata yet)", placement, True, {}, {}, {},
                    (f"the {missing} checkpoint is not downloaded yet: sizes unknown, the plan cannot check "
                     f"the budget (it will after the first download and restart)", *reasons))
    dtype_bytes = 4 if settings.dtype == "float32" or (settings.dtype == "auto" and device == "cpu") else 2
    parts = read_components(zimage, vl)
    if settings.transformer_file and Path(settings.transformer_file).is_file():  # (a URL: counted once cached)
        parts = with_transformer_file(parts, settings.transformer_file)
    controlnet = read_controlnet(settings.controlnet_path) if settings.controlnet_path else None
    if controlnet is not None:
        parts["controlnet"] = controlnet
    return plan(parts, budget, device, dtype_bytes,
                vl_pixels=settings.vl_max_pixels, tiling_pixels=settings.vae_tiling_pixels,
                overrides=overrides(settings), quantizable=not device.startswith("mps"),
                can_park=settings.vl_auto_unload)

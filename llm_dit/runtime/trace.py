"""Traced memory per stage: the app's forward passes at any size, on fake tensors.

    python -m llm_dit.runtime.trace                       # the released sizes -> traced.json here

Each model is built from the config the planner reads (`config.json` of a checkpoint folder; by
default the released architectures, written by `tiny.write_metadata_only`) under torch's
`FakeTensorMode`: every tensor has a shape, a dtype and a device but no storage, so a 6 B DiT
costs nothing and a forward does no math (seconds per stage). torch's `MemTracker` counts the
storage every operation would allocate and frees it when the tensor dies, which gives the peak of
each stage; `FlopCounterMode` counts its FLOPs.

Attention is traced twice: with the math kernel (`SDPBackend.MATH`, which materialises the N x N
scores, as the CPU fallback and MPS do) and with a fused kernel (`SDPBackend.FLASH_ATTENTION`,
whose memory is the output and one log-sum-exp row per query, as CUDA's flash and
memory-efficient kernels). The planner budgets CUDA with the fused numbers.

Known gaps: the Qwen3-VL trace leaves out DeepStack (adding 3 ViT layers' features at the image
positions indexes by a boolean mask, which fake tensors cannot size; its tensors are 1024 x 2560
each, a few MiB); its weights are counted from the whole config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

import torch

GiB = 2**30
DATA = Path(__file__).with_name("traced.json")  # memory.TRACED, which the planner reads
COMMAND = "python -m llm_dit.runtime.trace"
CAPTION_TOKENS = 512  # the text encoder's padded length and the DiT's caption length
DIT_SIZES = ((1024, 1024), (1536, 1536), (2048, 2048), (1536, 1024), (1024, 1536))
VAE_SIDES = (1024, 2048)
VL_PIXELS = 1024 * 1024  # the default pixel budget (settings.vl_max_pixels)
KERNELS = ("math", "fused")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def build(folder: Path, dtype: torch.dtype, fake, deepstack: bool = True, cls: str | None = None) -> torch.nn.Module:
    """The model a checkpoint folder's config describes, with fake (or, fake=None, random) weights;
    a transformers model as `cls` (the class the app loads) or its config's architecture."""
    config = json.loads((Path(folder) / "config.json").read_text())
    with _default_dtype(dtype), (fake or contextlib.nullcontext()):
        if "_class_name" in config:  # a diffusers model
            import diffusers

            return getattr(diffusers, config["_class_name"]).from_config(config).eval()
        import transformers

        hf = transformers.AutoConfig.from_pretrained(str(folder))
        if not deepstack and hasattr(hf, "vision_config"):
            hf.vision_config.deepstack_visual_indexes = []
        model = getattr(transformers, cls or hf.architectures[0])._from_config(hf, attn_implementation="sdpa")
        model.tie_weights()
        return model.eval()


def _params_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


def _kernel(name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "default":  # whatever torch picks on this device (what a real run on it does)
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH if name == "math" else SDPBackend.FLASH_ATTENTION)


class _Stage(torch.nn.Module):
    """One stage as a module around its model: MemTracker then sees a module called repeatedly
    inside it (the VAE's decoder, once per tile) as reuse within one call, not as a second call."""

    def __init__(self, model: torch.nn.Module, call):
        super().__init__()
        self.model, self.call = model, call

    def forward(self):
        return self.call()


def measure(model: torch.nn.Module, call, kernel: str, flops: bool = False) -> dict:
    """Peak storage (weights included) of `call()` under MemTracker; its FLOPs if asked."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.flop_counter import FlopCounterMode

    stage = _Stage(model, call)
    tracker = MemTracker()
    tracker.track_external(stage)
    counter = FlopCounterMode(display=False) if flops else contextlib.nullcontext()
    with counter, tracker, torch.no_grad(), _kernel(kernel):
        stage()
    peak = sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values())
    row = {"peak_bytes": peak}
    if flops:
        row["flop"] = counter.get_total_flops()
    return row


# ---- the app's forward passes -----------------------------------------------------------------
def text_encode(model, tokens: int = CAPTION_TOKENS):
    ids = torch.zeros(1, tokens, dtype=torch.long)
    return lambda: model(input_ids=ids, output_hidden_states=True)


def dit_step(model, height: int, width: int, dtype, fake, caption: int = CAPTION_TOKENS):
    channels = model.config.in_channels
    with fake or contextlib.nullcontext():
        latents = [torch.randn(channels, 1, height // 8, width // 8, dtype=dtype)]
        caption_feats = [torch.randn(caption, model.config.cap_feat_dim, dtype=dtype)]
    t = torch.tensor([0.5])
    return lambda: model(latents, t, caption_feats, return_dict=False)


def vae_decode(model, side: int, tiled: bool, dtype, fake):
    if tiled:
        model.enable_tiling()
    else:
        model.disable_tiling()
    with fake or contextlib.nullcontext():
        latents = torch.randn(1, model.config.latent_channels, side // 8, side // 8, dtype=dtype)
    return lambda: model.decode(latents, return_dict=False)


def vl_extract(model, pixels: int, dtype, fake, text_tokens: int = 64):
    """One extraction forward, as `conditioning.vl.run_extraction` calls it, for a square image of
    `pixels` (the processor's grid: 16 px patches, 2x2 merged into one token)."""
    config, vision = model.config, model.config.vision_config
    side = int(math.sqrt(pixels)) // (vision.patch_size * vision.spatial_merge_size) * vision.spatial_merge_size
    image_tokens = side * side // vision.spatial_merge_size**2
    ids = torch.cat([torch.full((1, text_tokens // 2), 100), torch.tensor([[config.vision_start_token_id]]),
                     torch.full((1, image_tokens), config.image_token_id), torch.tensor([[config.vision_end_token_id]]),
                     torch.full((1, text_tokens // 2), 100)], dim=1)
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    with fake or contextlib.nullcontext():
        pixel_values = torch.randn(side * side, patch, dtype=dtype)
    grid = torch.tensor([[1, side, side]])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == config.image_token_id).long(),
                  pixel_values=pixel_values, image_grid_thw=grid)
    return lambda: model(**inputs, output_hidden_states=True, logits_to_keep=1), ids.shape[1], side * side


# ---- all stages --------------------------------------------------------------------------------
def _row(model, call, weights: int, kernels, flops: bool) -> dict:
    row = {"weights_gib": round(weights / GiB, 4)}
    for i, kernel in enumerate(kernels):
        traced = measure(model, call, kernel, flops=flops and i == len(kernels) - 1)
        row[kernel] = {"peak_gib": round(traced["peak_bytes"] / GiB, 4),
                       "activation_gib": round((traced["peak_bytes"] - weights) / GiB, 4)}
        if "flop" in traced:
            row["tflop"] = round(traced["flop"] / 1e12, 3)
    return row


def trace(zimage: Path, vl: Path | None, dtype: str = "bfloat16", kernels=KERNELS, dit_sizes=DIT_SIZES,
          vae_sides=VAE_SIDES, vl_pixels: int = VL_PIXELS, flops: bool = True, log=print) -> dict:
    """Weights, activations and peak of every stage (GiB), per attention kernel, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch_dtype = DTYPES[dtype]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    stages, started = {}, time.perf_counter()

    def done(name, row):
        stages[name] = row
        log(f"{name}: {json.dumps(row)} ({time.perf_counter() - started:.1f} s)")

    text = build(Path(zimage) / "text_encoder", torch_dtype, mode, cls="Qwen3Model")
    shapes = {"text_encoder": {"width": text.config.hidden_size, "heads": text.config.num_attention_heads}}
    done(f"text encode {CAPTION_TOKENS} tokens",
         {"part": "text_encoder", "tokens": CAPTION_TOKENS,
          **_row(text, text_encode(text), _params_bytes(text), kernels, flops)})
    del text
    dit = build(Path(zimage) / "transformer", torch_dtype, mode)
    shapes["transformer"] = {"width": dit.config.dim, "heads": dit.config.n_heads}
    for height, width in dit_sizes:
        tokens = height * width // 256 + CAPTION_TOKENS
        done(f"DiT step {width}x{height}",
             {"part": "transformer", "height": height, "width": width, "tokens": tokens,
              **_row(dit, dit_step(dit, height, width, torch_dtype, mode), _params_bytes(dit), kernels, flops)})
    del dit
    vae = build(Path(zimage) / "vae", torch_dtype, mode)
    shapes["vae"] = {"width": vae.config.block_out_channels[0], "heads": 1, "tile": vae.tile_sample_min_size}
    for side in vae_sides:
        for tiled in (False, True):
            done(f"VAE decode {side}x{side} {'tiled' if tiled else 'whole'}",
                 {"part": "vae", "pixels": side * side, "tiled": tiled,
                  **_row(vae, vae_decode(vae, side, tiled, torch_dtype, mode), _params_bytes(vae), kernels, flops)})
    del vae
    if vl is not None:
        vl_class = "Qwen3VLForConditionalGeneration"
        whole = _params_bytes(build(Path(vl), torch_dtype, mode, cls=vl_class))
        model = build(Path(vl), torch_dtype, mode, deepstack=False, cls=vl_class)
        call, tokens, patches = vl_extract(model, vl_pixels, torch_dtype, mode)
        row = _row(model, call, _params_bytes(model), kernels, flops)
        row["weights_gib"] = round(whole / GiB, 4)  # with the DeepStack mergers the trace leaves out
        text_config, vision = model.config.text_config, model.config.vision_config
        shapes["vl"] = {"width": text_config.hidden_size, "heads": text_config.num_attention_heads,
                        "vision_width": vision.hidden_size, "vision_heads": vision.num_heads}
        done(f"VL extraction {vl_pixels:,} px",
             {"part": "vl", "pixels": vl_pixels, "tokens": tokens, "patches": patches, **row})
    return {"command": COMMAND, "torch": torch.__version__.split("+")[0], "dtype": dtype,
            "kernels": {"math": "SDPBackend.MATH: N x N attention scores materialised",
                        "fused": "SDPBackend.FLASH_ATTENTION: no scores (as CUDA flash / memory-efficient)",
                        "default": "the kernel torch picks on this CPU"},
            "shapes": shapes, "stages": stages, "fit": fit(stages, shapes, torch_dtype.itemsize)}


def _values(part: str, row: dict, shape: dict) -> tuple[float, float]:
    """(linear, quadratic) size of a stage in values: tokens x width, and heads x tokens² (the
    attention scores) -- what the activation terms are proportional to."""
    if part == "vae":  # the decoder's mid-block attends over the latent pixels with one head
        tokens = (min(row["pixels"], shape["tile"] ** 2) if row["tiled"] else row["pixels"]) / 64
        return row["pixels"] * shape["width"], tokens**2
    linear, quadratic = row["tokens"] * shape["width"], shape["heads"] * row["tokens"] ** 2
    if part == "vl":
        linear += row["patches"] * shape["vision_width"]
        quadratic += shape["vision_heads"] * row["patches"] ** 2
    return linear, quadratic


def fit(stages: dict, shapes: dict, dtype_bytes: int) -> dict:
    """Per part, bytes of activation per value of the linear term with a fused kernel (`fused`:
    the most any traced stage needed); what the math path adds on top, a least-squares fit in the
    linear term and the attention scores (`math_linear`, `math`; never below zero), scaled up
    until no traced stage is above it; for the VAE also the bytes per output pixel the kept tiles
    add (`tiled`)."""
    import numpy as np

    result = {}
    for part, shape in shapes.items():
        rows = [r for r in stages.values() if r["part"] == part and not r.get("tiled")]
        values = np.array([_values(part, r, shape) for r in rows], dtype=np.float64)
        fused = max(r["fused"]["activation_gib"] * GiB / (lin * dtype_bytes) for (lin, _), r in zip(values, rows))
        added = np.array([r["math"]["activation_gib"] * GiB / dtype_bytes - fused * lin
                          for (lin, _), r in zip(values, rows)])
        coef = (np.linalg.lstsq(values, added, rcond=None)[0] if len(rows) > 1
                else np.array([0.0, max(added[0], 0.0) / values[0][1]]))
        coef *= max(1.0, *(a / max(v @ coef, 1e-9) for v, a in zip(values, added)))
        result[part] = {"fused": round(float(fused), 4), "math_linear": round(float(coef[0]), 4),
                        "math": round(float(coef[1]), 4)}
        if part == "vae":
            tile_px = shape["tile"] ** 2
            one_tile = fused * tile_px * shape["width"] * dtype_bytes
            result[part]["tiled"] = round(float(max(
                (r["fused"]["activation_gib"] * GiB - one_tile) / (r["pixels"] * dtype_bytes)
                for r in stages.values() if r["part"] == part and r.get("tiled") and r["pixels"] > tile_px)), 4)
    return result


def load(path: Path = DATA) -> dict:
    """The stored trace (the planner's activation terms come from it)."""
    return json.loads(Path(path).read_text())


def stage_table(data: dict) -> str:
    """The README's table of traced stages (GiB; TFLOP per forward)."""
    lines = ["| stage | weights | activations, fused attention | peak, fused | activations, math attention "
             "| peak, math | TFLOP |", "|---|---|---|---|---|---|---|"]
    for name, row in data["stages"].items():
        lines.append(f"| {name} | {row['weights_gib']:.2f} | {row['fused']['activation_gib']:.2f} | "
                     f"{row['fused']['peak_gib']:.2f} | {row['math']['activation_gib']:.2f} | "
                     f"{row['math']['peak_gib']:.2f} | {row.get('tflop', 0):.1f} |")
    return "\n".join(lines)


def plan_table(parts: dict, budgets=(80, 24, 16, 12, 8)) -> str:
    """The README's table of plans for the released sizes (estimated peaks in GiB, on CUDA)."""
    from .memory import plan

    lines = ["| budget (GiB) | plan | offload | text encoder | quantized | VL model | peak generating "
             "| peak extracting |", "|---|---|---|---|---|---|---|---|"]
    names = {"transformer": "DiT", "text_encoder": "text encoder", "vl": "VL"}
    for budget in budgets:
        p = plan(parts, budget)
        q = p.placement
        quant = ", ".join(names[k] for k, v in q.quantize.items() if v != "none")
        quant = f"{quant} int8" if quant else "—"
        encoder = ("GPU (offloaded)" if q.offload != "none" else "GPU") if q.text_encoder_on_gpu else "CPU"
        vl = {"gpu": "GPU, beside the others", "gpu-park": "GPU, others parked on the CPU"}.get(q.vl, q.vl)
        lines.append(f"| {budget} | {p.name} | {q.offload} | {encoder} | {quant} | {vl} | "
                     f"{p.peaks_gib['generate']:.1f} | {p.peaks_gib.get('vl', 0):.1f} |")
    return "\n".join(lines)


# Files people hold, at their published sizes in bytes (hub file listings; 3 significant figures
# where the listing rounds): the DiT as a single file or GGUF, and the union ControlNets.
KNOWN_FILES = {
    "bf16 folder or single file (12.3 GB)": ("transformer", None),
    "fp8 e4m3fn single file (6.15 GB, upcast at load)": ("transformer", None),
    "GGUF Q8_0 (z_image_turbo-Q8_0.gguf, 6.58 GB)": ("transformer", 6_577_440_704),
    "GGUF Q4_K_S (z_image_turbo-Q4_K_S.gguf, 4.66 GB)": ("transformer", 4_660_000_000),
    "bf16 + ControlNet union 1.0 (3.1 GB)": ("controlnet", 3_100_000_000),
    "bf16 + ControlNet union 2.x (6.71 GB)": ("controlnet", 6_712_488_675),
}


def checkpoint_table(parts: dict, budgets=(24, 16, 12, 8)) -> str:
    """The README's plans per checkpoint format (plan and estimated peak generating, GiB, on CUDA):
    a GGUF DiT held at its file's size, an fp8 file at the run dtype, a bf16 ControlNet beside."""
    from dataclasses import replace

    from .memory import Component, plan, weights_gib

    lines = ["| DiT (and ControlNet) | their weights (GiB) | " + " | ".join(f"{b} GiB" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for name, (part, size) in KNOWN_FILES.items():
        variant = dict(parts)
        if part == "controlnet":
            variant["controlnet"] = Component("controlnet", size // 2, "known size (bf16)")
        elif size is not None:
            variant["transformer"] = replace(parts["transformer"], held_bytes=size)
        weights = sum(weights_gib(variant[n], 2) for n in ("transformer", "controlnet") if n in variant)
        cells = [f"{p.name} ({p.peaks_gib['generate']:.1f})" for p in (plan(variant, b) for b in budgets)]
        lines.append(f"| {name} | {weights:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--zimage", help="a Z-Image checkpoint folder (default: the released configs)")
    parser.add_argument("--vl", help="a Qwen3-VL checkpoint folder (default: the released config)")
    parser.add_argument("--out", default=str(DATA), help="where to write the JSON")
    parser.add_argument("--tables", action="store_true",
                        help="print the README's tables from the stored trace (no tracing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.zimage and args.vl:
            zimage, vl = Path(args.zimage), Path(args.vl)
        else:
            from .tiny import write_metadata_only

            zimage, vl = write_metadata_only(Path(tmp))
        if args.tables:
            result = load(Path(args.out))
        else:
            result = trace(zimage, vl)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        from .memory import read_components

        parts = read_components(zimage, vl)
        print(stage_table(result), plan_table(parts), checkpoint_table(parts), sep="\n\n")
    return result


if __name__ == "__main__":
    main()

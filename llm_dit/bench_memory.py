"""Memory cases of the benchmark (`python -m llm_dit.bench --cases M1,M2,M3`).

M1 the VL extraction's cost against the reference's pixel budget (64k ... 1M pixels);
M2 one generation per memory plan, each in a fresh process: seconds per image, peak memory per
   stage (CUDA) or the resident memory it added (CPU), the DiT's bytes, whether it fit. On a GPU,
   `--budgets 24,16` simulates smaller cards with `torch.cuda.set_per_process_memory_fraction`;
   `--vl` adds a VL extraction (time, memory returned after unload);
M3 tiled vs whole-image VAE decode at 2048²: peak memory and agreement.
`stage_probe` sets the resident memory a forward adds beside its trace (runtime/trace.py).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

# Lever sets measured by M2: the rungs of the planner's ladder, as explicit settings over "all on
# the device, nothing offloaded or quantized"; "planned" lets the planner choose for the budget.
PLANS = {
    "planned": None,
    "all on device": {},
    "text encoder on cpu": {"text_encoder_device": "cpu"},
    "model offload": {"offload": "model"},
    "int8 DiT + TE": {"quantize_transformer": "int8", "quantize_text_encoder": "int8"},
    "fp8 DiT + TE": {"quantize_transformer": "fp8", "quantize_text_encoder": "fp8"},
    "group offload": {"offload": "group"},
    "sequential offload": {"offload": "sequential"},
}
VL_PIXELS = (64 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


def child(fn: str, **kwargs) -> dict:
    """Run `llm_dit.bench_memory.<fn>(**kwargs)` in a fresh interpreter (a clean memory high-water
    mark); its result is the JSON on its last stdout line."""
    root = Path(__file__).resolve().parent.parent
    code = f"import json; from llm_dit.bench_memory import {fn}; print(json.dumps({fn}(**{kwargs!r})))"
    # glibc adapts its mmap threshold as blocks are freed, so whether a freed activation returns to
    # the OS (and so the peak RSS) depended on allocation history: the same tiled decode measured
    # 351-617 MB. Pinning the threshold at glibc's initial 128 KiB makes every large block an mmap
    # that is returned when freed: the same decode then measures 299 MB every time.
    env = {**os.environ, "PYTHONPATH": str(root), "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reset_peak() -> int:
    """Start a fresh high-water mark at the current RSS (Linux: `clear_refs` 5 resets VmHWM), so
    that a spike before the measured step (imports, loading weights) is not counted in it; returns
    the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the peak since the start stands (an upper bound)
        pass
    return psutil.Process().memory_info().rss


def _peak_added(before: int) -> int:
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))  # KiB
    except (OSError, StopIteration):
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return hwm * 1024 - before


def decode_probe(folder: str, side: int, tiled: bool, out: str) -> dict:
    """One VAE decode of side² pixels; saves the image to `out` and returns the peak memory it added."""
    import numpy as np
    from diffusers import AutoencoderKL

    from .runtime.levers import set_vae_tiling

    cuda = torch.cuda.is_available()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval().to("cuda" if cuda else "cpu")
    set_vae_tiling(vae, tiled)
    latents = torch.randn(1, 16, side // 8, side // 8, generator=torch.Generator().manual_seed(0)).to(vae.device)
    with torch.no_grad():
        vae.decode(latents[..., :8, :8])  # warm-up: kernels and allocator
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _reset_peak()
        image = vae.decode(latents).sample
    peak = torch.cuda.max_memory_allocated() - before if cuda else _peak_added(before)
    np.save(out, image[0].float().cpu().numpy())
    return {"peak_bytes": peak}


def vae_tiling(folder: Path, side: int = 2048) -> dict:
    """M3: tiled vs whole-image decode at side², each in its own process: added peak and agreement."""
    import numpy as np

    row, images = {"side": side}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for tiled in (False, True):
            out = str(Path(tmp) / f"{tiled}.npy")
            result = child("decode_probe", folder=str(folder), side=side, tiled=tiled, out=out)
            if "error" in result:
                raise RuntimeError(f"decode probe failed: {result['error']}")
            row[f"{'tiled' if tiled else 'whole'}_peak_mb"] = result["peak_bytes"] >> 20
            images[tiled] = np.load(out)
    diff = np.abs(images[True] - images[False])  # pixel values in [-1, 1]
    row.update(max_abs_diff=round(float(diff.max()), 4), mean_abs_diff=round(float(diff.mean()), 5),
               p99_abs_diff=round(float(np.quantile(diff, 0.99)), 4),
               tiled_vs_whole_peak=round(row["tiled_peak_mb"] / max(row["whole_peak_mb"], 1), 3))
    return row


def vl_pixel_budget(vl_folder: Path, repeats: int) -> dict:
    """M1: one extraction of a 1024² reference under each pixel budget: tokens and seconds."""
    from PIL import Image
    from transformers import Qwen3VLForConditionalGeneration

    from .conditioning.vl import ExtractionParams, ImageOnlyProcessor, run_extraction

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    processor = ImageOnlyProcessor.from_pretrained(str(vl_folder))
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(vl_folder), dtype=dtype).to(device).eval()
    image = Image.effect_noise((1024, 1024), 60).convert("RGB")
    params = ExtractionParams(text="A lighthouse on a cliff in a storm, oil painting.")
    rows = {}
    for pixels in VL_PIXELS:
        times = []
        with torch.no_grad():
            for i in range(repeats + 1):  # the first run warms up
                start = time.perf_counter()
                _, _, counts = run_extraction(model, processor, image, params, 64 * 64, pixels)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        seconds = round(statistics.median(times[1:]), 4)
        rows[f"{pixels // 1024}k"] = {"image_tokens": counts["image"], "seconds": seconds}
    first = next(iter(rows.values()))["seconds"]
    for row in rows.values():
        row["vs_64k"] = round(row["seconds"] / first, 2)
    return rows


def plan_probe(folder: str, vl_folder: str, levers: dict | None, image: int, repeats: int,
               budget_gib: float | None = None, vl: bool = False) -> dict:
    """One generation with `levers` (explicit settings): seconds, peaks, the DiT's bytes, fit."""
    from PIL import Image

    from .pipelines.generate import txt2img
    from .runtime.memory import GiB
    from .runtime.models import ModelManager, module_bytes
    from .core.request import GenerationRequest
    from .runtime.settings import Settings
    from .conditioning.vl import ExtractionParams, extract

    cuda = torch.cuda.is_available()
    if cuda and budget_gib:
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_gib * GiB / torch.cuda.mem_get_info()[1]))
    device = "cuda" if cuda else "cpu"
    explicit = {} if levers is None else {
        **{f"{n}_device": device for n in ("text_encoder", "transformer", "vae", "vl")}, "offload": "none",
        **{f"quantize_{n}": "none" for n in ("transformer", "text_encoder", "vl")}, **levers}
    settings = Settings(model_path=folder, vl_model_path=vl_folder, memory_budget=str(budget_gib or "auto"),
                        **explicit)
    manager = ModelManager(settings)
    row = {"plan": manager.memory_plan().name, "plan_estimate_gib": manager.memory_plan().peaks_gib}
    before = _reset_peak()
    request = GenerationRequest(prompt="A red fox in fresh snow at dawn", height=image, width=image, seed=1)
    try:
        result = txt2img(manager, request)  # warm-up (loads, compiles)
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            result = txt2img(manager, GenerationRequest(**{**request.to_dict(), "prompt": f"{request.prompt} {i}"}))
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as err:
        return {**row, "fits": False, "error": str(err).splitlines()[0][:200]}
    row.update(fits=True, seconds=round(statistics.median(times), 3),
               dit_mb=round(module_bytes(manager.pipeline().transformer) / 2**20, 2),
               peak_mb_per_stage={s["name"]: (s["cuda_peak_bytes"] or 0) >> 20 for s in result.metadata["timeline"]}
               if cuda else {"rss_added": _peak_added(before) >> 20})
    if vl:
        start = time.perf_counter()
        with manager.vl_session():
            extract(manager, Image.effect_noise((1024, 1024), 60).convert("RGB"), ExtractionParams(text="a fox"))
        row["vl_extract_s"] = round(time.perf_counter() - start, 3)
        if cuda:
            row["cuda_allocated_after_vl_unload_mb"] = torch.cuda.memory_allocated() >> 20
    return row


def plans(folder: Path, vl_folder: Path, image: int, repeats: int, budgets: list[float | None],
          names: list[str], vl: bool) -> dict:
    """M2: each lever set under each budget, every one in a fresh process."""
    rows = {}
    for budget in budgets:
        for name in names:
            key = f"{name} @ {budget} GiB" if budget else name
            rows[key] = child("plan_probe", folder=str(folder), vl_folder=str(vl_folder), levers=PLANS[name],
                              image=image, repeats=repeats, budget_gib=budget, vl=vl)
    return rows


def stage_probe(folder: str, stages: list, caption: int = 256) -> list[dict]:
    """For each (part, height, width): the resident memory one forward adds (a DiT step at height x
    width, or a VAE decode of it), weights loaded first, and the trace of the same call in float32
    on this CPU beside it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .runtime.trace import build, dit_step, measure, vae_decode

    def call(model, part, h, w, fake=None):
        if part == "transformer":
            return dit_step(model, h, w, torch.float32, fake, caption)
        return vae_decode(model, max(h, w), tiled=False, dtype=torch.float32, fake=fake)

    rows = []
    for part, height, width in stages:
        model = build(Path(folder) / part, torch.float32, None)
        with torch.no_grad():
            call(model, part, 64, 64)()  # warm-up: thread pools, kernels
            forward = call(model, part, height, width)
            before = _reset_peak()
            forward()
        measured = _peak_added(before)
        del model, forward
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        twin = build(Path(folder) / part, torch.float32, fake)
        weights = sum(p.numel() * 4 for p in twin.parameters())
        traced = measure(twin, call(twin, part, height, width, fake), "default")["peak_bytes"] - weights
        rows.append({"part": part, "height": height, "width": width, "measured_bytes": measured,
                     "traced_bytes": traced})
    return rows

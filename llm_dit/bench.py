"""Benchmark: our pipeline vs raw diffusers on the very same weights, measured side by side.

    python -m llm_dit.bench --size medium --repeats 5 --json bench.json

Models come from the tiny-model builder (`--size tiny|medium`); each A/B case alternates its two
sides and reports medians and the ratio ours / reference. Cases:
  P1 per image vs `ZImagePipeline(prompt=...)`: (a) new prompt each time, (b) text encoder on the
     CPU (with a GPU; on a CPU-only machine it is case a), (c) the same prompt again;
  P2 a blend x alpha sweep: extractions/encodes run vs distinct keys, sweep time vs K singles,
     batched vs unbatched;
  P3 resident memory before the VL model loads, after extraction, after auto-unload;
  P4 cold start: `app.py --tiny` to the first HTTP 200 vs the bare import of gradio+diffusers+transformers;
  P5 (GPU only; `--size full --image 1024`) attention backends × torch.compile, TFLOP/s, peak memory;
  P6 sweep throughput with 1 vs 2 processes (`accelerate launch -m llm_dit sweep`), end to end;
  P7 the text encoder on the CPU (the 16 GB plan): a 512-token encode in float32 (today) vs bfloat16;
  P8 `llm-dit --help` and a bad flag's error vs a bare `python -c pass` (target: under 2 s);
  M1-M3 memory (llm_dit.bench_memory): VL cost vs pixel budget, one generation per memory plan,
     tiled vs whole VAE decode.
Speed targets are read from the printed ratios, never asserted in tests.

The GPU proof in one command, within one short loan (llm_dit/gpu_proof.py; `--dry-run` on a CPU):

    python -m llm_dit.bench gpu-proof

The longer GPU grid (the released architecture, random weights, bf16):

    python -m llm_dit.bench --size full --image 1024 --repeats 3 --cases P5,M1,M2,M3 \
        --budgets 0,24,16 --vl --json gpu.json

"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import psutil
import torch

from .bench_memory import PLANS, plans, vae_tiling, vl_pixel_budget

PROMPTS = [
    "A red fox curled up in fresh snow at dawn, soft pink light, shallow depth of field, 85mm lens.",
    "An old lighthouse on a basalt cliff in a storm, waves exploding into spray, dramatic oil painting.",
    "A tiny bakery at night seen as an isometric cutaway, warm windows, people queuing in the rain.",
    "A minimalist poster with a single orange sun over a calm blue sea, risograph texture, wide margins.",
    "Portrait of an elderly fisherman with a weathered face, window light, muted colours, film grain.",
    "A glass greenhouse full of ferns and orchids, morning mist, sunbeams through dirty panes, detailed.",
    "A paper-cut diorama of a mountain village in winter, layered depth, soft rim light, pastel tones.",
    "Macro photograph of dew drops on a spider web at sunrise, backlit, creamy bokeh background.",
]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _ab(a, b, repeats: int) -> tuple[float, float]:
    """Alternate A and B `repeats` times (after one warm-up each); medians in seconds."""
    a(0), b(0)
    times_a, times_b = [], []
    for i in range(1, repeats + 1):
        for fn, times in ((a, times_a), (b, times_b)):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
    return _median(times_a), _median(times_b)


def p1(folder: Path, size: int, repeats: int, device: str) -> dict:
    from diffusers import ZImagePipeline

    from .pipelines.generate import txt2img
    from .runtime.models import ModelManager
    from .core.request import GenerationRequest
    from .runtime.settings import Settings

    ours = ModelManager(Settings(model_path=str(folder), transformer_device=device, vae_device=device,
                                 text_encoder_device=device))
    ours.pipeline()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    raw = ZImagePipeline.from_pretrained(str(folder), dtype=dtype).to(device)
    raw.set_progress_bar_config(disable=True)
    for view in ours._views.values():
        view.set_progress_bar_config(disable=True)

    def call_raw(prompt):
        raw(prompt=prompt, height=size, width=size, num_inference_steps=8, guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(1))

    def call_ours(prompt):
        txt2img(ours, GenerationRequest(prompt=prompt, height=size, width=size, seed=1))

    rows = {}
    new_a, new_b = _ab(lambda i: call_ours(f"{PROMPTS[i % len(PROMPTS)]} (take {i})"),
                       lambda i: call_raw(f"{PROMPTS[i % len(PROMPTS)]} (take {i})"), repeats)
    rows["a_new_prompt"] = {"ours_s": new_a, "diffusers_s": new_b, "ratio": round(new_a / new_b, 3)}
    if device == "cuda":
        cpu_te = ModelManager(Settings(model_path=str(folder), text_encoder_device="cpu"))
        raw_cpu = ZImagePipeline.from_pretrained(str(folder), dtype=dtype)
        raw_cpu.transformer.to("cuda"), raw_cpu.vae.to("cuda")
        b_ours, b_raw = _ab(lambda i: txt2img(cpu_te, GenerationRequest(prompt=f"{PROMPTS[0]} {i}", height=size,
                                                                        width=size, seed=1)),
                            lambda i: raw_cpu(prompt=f"{PROMPTS[0]} {i}", height=size, width=size,
                                              num_inference_steps=8, guidance_scale=0.0), repeats)
        rows["b_text_encoder_on_cpu"] = {"ours_s": b_ours, "diffusers_s": b_raw, "ratio": round(b_ours / b_raw, 3)}
    else:
        rows["b_text_encoder_on_cpu"] = {**rows["a_new_prompt"], "note": "CPU-only machine: the same as case a"}
    before = ours.text_cache.misses
    same_a, same_b = _ab(lambda i: call_ours(PROMPTS[0]), lambda i: call_raw(PROMPTS[0]), repeats)
    rows["c_same_prompt"] = {"ours_s": same_a, "diffusers_s": same_b, "ratio": round(same_a / same_b, 3),
                             "encodes_run_by_ours": ours.text_cache.misses - before}
    return rows


def p2(folder: Path, vl_folder: Path, size: int, repeats: int) -> dict:
    from PIL import Image

    from .studies.compare import SweepSpec, run_sweep
    from .pipelines.recipe import vl_generate
    from .runtime.models import ModelManager
    from .core.request import VLRequest
    from .runtime.settings import Settings

    settings = Settings(model_path=str(folder), vl_model_path=str(vl_folder))
    reference = Image.new("RGB", (256, 256), (200, 120, 40))
    base = VLRequest(prompt=PROMPTS[1], height=size, width=size, seed=3)
    spec = SweepSpec("blend_mode", "linear, linear_rms, adain", "alpha", "0.3, 0.6")
    cells = 6
    sweeps = Path(tempfile.mkdtemp(prefix="llm-dit-bench-sweeps-"))  # each sweep is a study folder

    def scratch() -> Path:
        return sweeps / f"sweep{time.perf_counter_ns()}"

    fresh = ModelManager(settings)
    sweep = run_sweep(fresh, spec, base, [reference], scratch())  # warm: loads, extraction, encode
    single = ModelManager(settings)
    vl_generate(single, base, [reference])
    t_single, t_sweep, t_batched = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        vl_generate(single, base, [reference])
        t_single.append(time.perf_counter() - t)
        t = time.perf_counter()
        run_sweep(fresh, spec, base, [reference], scratch())
        t_sweep.append(time.perf_counter() - t)
        t = time.perf_counter()
        run_sweep(fresh, replace(spec, batch_size=cells), base, [reference], scratch())
        t_batched.append(time.perf_counter() - t)
    shutil.rmtree(sweeps)
    one, whole, batched = _median(t_single), _median(t_sweep), _median(t_batched)
    return {"cells": cells, "counts_first_run": sweep.counts, "single_s": one, "sweep_s": whole,
            "sweep_vs_k_singles": round(whole / (cells * one), 3), "batched_s": batched,
            "batched_vs_unbatched": round(batched / whole, 3)}


def _rss() -> int:
    return psutil.Process().memory_info().rss


def p3(folder: Path, vl_folder: Path) -> dict:
    from PIL import Image

    from .runtime.models import ModelManager, release_memory
    from .runtime.settings import Settings
    from .conditioning.vl import ExtractionParams, extract

    manager = ModelManager(Settings(model_path=str(folder), vl_model_path=str(vl_folder)))
    manager.pipeline()
    release_memory()
    before = _rss()
    with manager.vl_session():
        extract(manager, Image.new("RGB", (512, 512), (10, 200, 90)), ExtractionParams(text=PROMPTS[2]))
        loaded = _rss()
        held = sum(r["bytes"] for r in manager.memory_report() if r["component"] == "vl")
    after = _rss()  # the session's end unloaded the model
    row = {"rss_before_mb": before >> 20, "rss_after_extraction_mb": loaded >> 20, "vl_model_mb": held >> 20,
           "rss_after_unload_mb": after >> 20, "after_vs_before": round(after / before, 3)}
    if torch.cuda.is_available():
        row["cuda_allocated_mb"] = torch.cuda.memory_allocated() >> 20
        row["cuda_reserved_mb"] = torch.cuda.memory_reserved() >> 20
    return row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p4(cache_dir: Path, repeats: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    imports, starts = [], []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gradio, diffusers, transformers"], check=True, env=env)
        imports.append(time.perf_counter() - t)
        port = _free_port()
        t = time.perf_counter()
        app = subprocess.Popen([sys.executable, str(root / "app.py"), "--tiny", "--cache-dir", str(cache_dir),
                                "--port", str(port), "--output-dir", tempfile.mkdtemp()], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t < 120:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            starts.append(time.perf_counter() - t)
        finally:
            app.terminate()
            app.wait(10)
    imp, start = _median(imports), _median(starts)
    return {"bare_import_s": imp, "app_first_200_s": start, "ratio": round(start / imp, 3)}


def p8(repeats: int) -> dict:
    """Seconds until `llm-dit --help` and `llm-dit generate --no-such-flag` answer, vs a bare interpreter."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    runs = {"bare_python": ["-c", "pass"], "help": ["-m", "llm_dit", "--help"],
            "bad_flag": ["-m", "llm_dit", "generate", "--no-such-flag"]}
    times = {name: [] for name in runs}
    for _ in range(max(1, repeats)):
        for name, args in runs.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    out = {f"{name}_s": round(_median(values), 3) for name, values in times.items()}
    out["help_vs_bare"] = round(out["help_s"] / out["bare_python_s"], 2)
    return out


def p6(folder: Path, vl_folder: Path, size: int) -> dict:
    """Sweep throughput with 1 and 2 processes (`accelerate launch`), end to end: process start,
    model load, extractions, cells, gather and saving. Two processes need two GPUs, or the CPU."""
    from .studies.distributed import launch_command

    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        return {"skipped": "one GPU: a second process would share it"}
    work = Path(tempfile.mkdtemp())
    from PIL import Image

    Image.new("RGB", (size, size), (200, 120, 40)).save(work / "reference.png")
    args = ["sweep", "--reference", str(work / "reference.png"), "--prompt", PROMPTS[0], "--height", str(size),
            "--width", str(size), "--seed", "1", "--x-axis", "alpha", "--x-values", "0.1, 0.3, 0.5, 0.7",
            "--y-axis", "blend_mode", "--y-values", "linear, adain", "--model-path", str(folder),
            "--vl-model-path", str(vl_folder)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    rows = {}
    for processes in (1, 2):
        t = time.perf_counter()
        done = subprocess.run(launch_command(processes, _free_port()) + args + ["--output-dir", str(work / str(processes))],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            return {"failed": done.stderr[-500:]}
        seconds = time.perf_counter() - t
        cells = json.loads(done.stdout)["counts"]["finished"]
        rows[f"{processes}_process"] = {"seconds": round(seconds, 3), "cells": cells,
                                        "cells_per_s": round(cells / seconds, 3)}
    rows["speedup"] = round(rows["1_process"]["seconds"] / rows["2_process"]["seconds"], 3)
    return rows


FULL_TFLOP_PER_IMAGE = 467.0  # 1024², 8 steps: DiT 8 × 56.6, text encoder 3.9, VAE 10.5


def p5(folder: Path, size: int, repeats: int) -> dict:
    """GPU only: attention backends × compilation, achieved TFLOP/s and peak memory per stage."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    from .pipelines.generate import attention_backends, txt2img
    from .runtime.models import ModelManager
    from .core.request import GenerationRequest
    from .runtime.settings import Settings

    managers = {compiled: ModelManager(Settings(model_path=str(folder), compile=compiled))  # regional compile
                for compiled in (False, True)}
    rows = {}
    for backend in [b for b in ("native", "flash", "_flash_3") if b in attention_backends()]:
        for compiled, manager in managers.items():
            request = GenerationRequest(prompt=PROMPTS[0], height=size, width=size, attention_backend=backend, seed=1)
            try:
                times, result = [], txt2img(manager, request)  # warm-up (and compilation)
                for _ in range(repeats):
                    t = time.perf_counter()
                    result = txt2img(manager, request)
                    times.append(time.perf_counter() - t)
            except ValueError as err:  # backend not installed here
                rows[f"{backend}"] = {"skipped": str(err)[:120]}
                break
            seconds = _median(times)
            row = {"seconds": seconds, "peak_mb_per_stage": {
                s["name"]: (s["cuda_peak_bytes"] or 0) >> 20 for s in result.metadata["timeline"]}}
            if size == 1024:
                row["tflops"] = round(FULL_TFLOP_PER_IMAGE / seconds, 1)
            rows[f"{backend}{' + compile' if compiled else ''}"] = row
    return rows


def p7(folder: Path, repeats: int) -> dict:
    """The CPU text encode in float32 (what the app runs there today) against bfloat16, which CPUs
    with AMX / AVX-512 BF16 run natively: seconds for 512 tokens, the ratio, and how far the
    hidden states the DiT reads (layer -2) move, relative to their largest value."""
    from transformers import Qwen3Model

    ids = torch.randint(0, 600, (1, 512), generator=torch.Generator().manual_seed(0))
    models = {dtype: Qwen3Model.from_pretrained(str(folder / "text_encoder"), dtype=dtype).eval()
              for dtype in (torch.float32, torch.bfloat16)}

    def encode(dtype):
        with torch.no_grad():
            return models[dtype](input_ids=ids, output_hidden_states=True).hidden_states[-2].float()

    t32, t16 = _ab(lambda i: encode(torch.float32), lambda i: encode(torch.bfloat16), repeats)
    exact = encode(torch.float32)
    return {"float32_s": t32, "bfloat16_s": t16, "bf16_vs_float32": round(t16 / t32, 3),
            "max_rel_diff": round(float((encode(torch.bfloat16) - exact).abs().max() / exact.abs().max()), 4),
            "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-proof"]:  # the one-command GPU proof (llm_dit/gpu_proof.py)
        from .gpu_proof import main as gpu_proof

        return gpu_proof(argv[1:])
    parser = argparse.ArgumentParser(description="Z-Image VL Studio benchmark (ours vs raw diffusers)")
    parser.add_argument("--size", default="medium", choices=["tiny", "medium", "full"],
                        help="model size to build (full = the released architecture, for GPUs)")
    parser.add_argument("--image", type=int, default=256, help="image side in pixels (multiple of 16)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per side of each case")
    parser.add_argument("--cases", default="P1,P2,P3,P4,P5,P6,P7,P8",
                        help="comma-separated subset of P1..P6 and M1..M3 (memory)")
    parser.add_argument("--budgets", default="0", help="M2: GiB budgets to simulate on a GPU (0 = the whole card)")
    parser.add_argument("--plans", default=",".join(PLANS), help="M2: lever sets to run, comma-separated")
    parser.add_argument("--vl", action="store_true", help="M2: add a VL extraction to each run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", default=None, help="where the benchmark checkpoints are built")
    parser.add_argument("--json", default="bench.json", help="where to write the results")
    args = parser.parse_args(argv)
    from .runtime.tiny import default_cache_dir, ensure_tiny_qwen3_vl, ensure_tiny_zimage

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    folder = ensure_tiny_zimage(cache_dir=cache, size=args.size)
    vl_folder = ensure_tiny_qwen3_vl(cache_dir=cache, size=args.size)
    cases = {c.strip().upper() for c in args.cases.split(",")}
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": args.device,
                           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                           "torch": torch.__version__},
               "size": args.size, "image": args.image, "repeats": args.repeats}
    if "P1" in cases:
        results["P1"] = p1(folder, args.image, args.repeats, args.device)
    if "P2" in cases:
        results["P2"] = p2(folder, vl_folder, args.image, args.repeats)
    if "P3" in cases:
        results["P3"] = p3(folder, vl_folder)
    if "P4" in cases:
        results["P4"] = p4(cache, min(args.repeats, 3))
    if "P5" in cases:
        results["P5"] = p5(folder, args.image, args.repeats)
    if "P6" in cases:
        results["P6"] = p6(folder, vl_folder, args.image)
    if "P7" in cases:
        results["P7"] = p7(folder, args.repeats)
    if "P8" in cases:
        results["P8"] = p8(args.repeats)
    if "M1" in cases:
        results["M1"] = vl_pixel_budget(vl_folder, args.repeats)
    if "M2" in cases:
        budgets = [float(b) or None for b in args.budgets.split(",")]
        names = [n.strip() for n in args.plans.split(",") if n.strip()]
        results["M2"] = plans(folder, vl_folder, args.image, args.repeats, budgets, names, args.vl)
    if "M3" in cases:
        results["M3"] = vae_tiling(folder, 2048)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(table(results))
    return results


def table(results: dict) -> str:
    lines = [f"machine: {results['machine']}", f"models: {results['size']}, image {results['image']}², "
             f"{results['repeats']} repeats", "", "| case | ours / reference | detail |", "|---|---|---|"]
    for key, row in results.get("P1", {}).items():
        extra = f" ({row['note']})" if "note" in row else ""
        if "encodes_run_by_ours" in row:
            extra += f"; ours encoded {row['encodes_run_by_ours']}x in {results['repeats'] + 1} calls"
        lines.append(f"| P1 {key} | {row['ratio']} | ours {row['ours_s']} s vs diffusers {row['diffusers_s']} s{extra} |")
    if "P2" in results:
        r = results["P2"]
        c = r["counts_first_run"]
        lines.append(f"| P2 sweep vs K singles | {r['sweep_vs_k_singles']} | {r['cells']} cells in {r['sweep_s']} s vs "
                     f"{r['single_s']} s each; extractions {c['extractions_run']}/{c['distinct_extractions']} distinct, "
                     f"encodes {c['encodes_run']}/{c['distinct_texts']} distinct |")
        lines.append(f"| P2 batched vs unbatched | {r['batched_vs_unbatched']} | {r['batched_s']} s vs {r['sweep_s']} s |")
    if "P3" in results:
        r = results["P3"]
        lines.append(f"| P3 RSS after unload / before load | {r['after_vs_before']} | {r['rss_before_mb']} MB -> "
                     f"{r['rss_after_extraction_mb']} MB with VL ({r['vl_model_mb']} MB) -> {r['rss_after_unload_mb']} MB |")
    if "P4" in results:
        r = results["P4"]
        lines.append(f"| P4 first HTTP 200 / bare import | {r['ratio']} | {r['app_first_200_s']} s vs "
                     f"{r['bare_import_s']} s |")
    if "P6" in results:
        r = results["P6"]
        if "speedup" in r:
            lines.append(f"| P6 sweep, 2 processes vs 1 | {r['speedup']}x | {r['2_process']['cells']} cells: "
                         f"{r['1_process']['seconds']} s vs {r['2_process']['seconds']} s end to end |")
        else:
            lines.append(f"| P6 sweep over processes | — | {r} |")
    if "P7" in results:
        r = results["P7"]
        lines.append(f"| P7 CPU text encode, bf16 / float32 | {r['bf16_vs_float32']} | 512 tokens: "
                     f"{r['bfloat16_s']} s vs {r['float32_s']} s; layer -2 moves by {r['max_rel_diff']} of its max |")
    if "P8" in results:
        r = results["P8"]
        lines.append(f"| P8 `llm-dit --help` / bare python | {r['help_vs_bare']} | help {r['help_s']} s, bad flag "
                     f"{r['bad_flag_s']} s, bare {r['bare_python_s']} s |")
    p5_rows = results.get("P5", {})
    if "skipped" in p5_rows:
        lines.append(f"| P5 GPU | — | skipped: {p5_rows['skipped']} |")
    else:
        for key, row in p5_rows.items():
            lines.append(f"| P5 {key} | {row.get('tflops', '—')} TFLOP/s | {row} |")
    for key, row in results.get("M1", {}).items():
        lines.append(f"| M1 VL extraction at {key} px | {row['vs_64k']}x the 64k time | {row['image_tokens']} image "
                     f"tokens, {row['seconds']} s |")
    for key, row in results.get("M2", {}).items():
        lines.append(f"| M2 {key} | {row.get('seconds', '—')} s | {row} |")
    if "M3" in results:
        r = results["M3"]
        lines.append(f"| M3 tiled / whole VAE decode peak at {r['side']}² | {r['tiled_vs_whole_peak']} | "
                     f"{r['tiled_peak_mb']} MB vs {r['whole_peak_mb']} MB; mean |diff| {r['mean_abs_diff']}, "
                     f"99th pct {r['p99_abs_diff']}, max {r['max_abs_diff']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

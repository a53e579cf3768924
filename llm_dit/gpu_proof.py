"""The GPU proof in one command, inside one short device loan (`python -m llm_dit.bench gpu-proof`).

On a bare CUDA machine: installs the requirements (keeping the machine's torch), builds the
released architectures with random weights directly on the GPU in bf16 (no checkpoint on disk),
then, in this order, each part only while time is left (default 8 minutes in all):

  stages   each stage's measured CUDA peak beside its traced and planned peak (text encode, DiT
           step, VAE decode whole and tiled, Qwen3-VL extraction);
  P5       raw diffusers `ZImagePipeline` at 1024², 8 steps: native attention, then flash if importable;
  caps     the plan table's placements under simulated 24 / 16 / 12 GiB cards
           (`torch.cuda.set_per_process_memory_fraction`): measured peak against the plan's;
  compile  regional compilation of the DiT (`compile_repeated_blocks`), one step, if time is left.

It writes one JSON and a markdown table and prints the seconds each part took. `--dry-run` runs
the same parts on the CPU with the tiny architectures in seconds (the test suite does, so the
command cannot rot); there "measured" is MemTracker on the real tensors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPS_GIB = (24, 16, 12)


def install() -> str:
    """pip install the requirements; a torch already installed stays (the machine's CUDA build;
    without one, the pinned torch from PyPI is its CUDA build)."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    if importlib.util.find_spec("torch"):
        lines = [line for line in lines if not line.startswith("torch==")]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as wanted:
        wanted.write("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", wanted.name],
                          capture_output=True, text=True)
    return "ok" if done.returncode == 0 else "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:300]


class Clock:
    """The time limit: a part starts only while time is left; each part's seconds are kept."""

    def __init__(self, limit_s: float):
        self.start, self.limit_s, self.seconds = time.perf_counter(), limit_s, {}

    def left(self) -> float:
        return self.limit_s - (time.perf_counter() - self.start)

    def run(self, name: str, fn, results: dict) -> None:
        if self.left() <= 0:
            results[name] = {"skipped": "time limit reached"}
            return
        t = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as err:  # noqa: BLE001 - one failed part must not lose the others' results
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
        self.seconds[name] = round(time.perf_counter() - t, 2)
        print(f"{name}: {self.seconds[name]} s", flush=True)


def _peak(device: str, model, call, kernel: str) -> int:
    """Bytes one call adds at its peak, weights included: CUDA's allocator on a GPU, MemTracker on
    the real tensors on the CPU."""
    import torch

    from .runtime.trace import measure

    if device == "cpu":
        return measure(model, call, kernel)["peak_bytes"]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.no_grad():
        call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base + weights


class Proof:
    def __init__(self, device: str, size: str, image: int, folder: Path):
        import torch

        from .runtime.memory import read_components
        from .runtime.tiny import write_metadata_only

        self.device, self.image = device, image
        self.steps = 8 if device == "cuda" else 1  # the dry run only walks the path
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.kernel = "fused" if device == "cuda" else "default"
        self.zimage, self.vl = write_metadata_only(folder, size)
        self.parts = read_components(self.zimage, self.vl)

    def model(self, part: str, fake=None, cls: str | None = None):
        import torch

        from .runtime.trace import build

        folder = self.vl if part == "vl" else self.zimage / part
        deepstack = part != "vl"  # as the trace (see runtime/trace.py)
        if fake:
            return build(folder, self.dtype, fake, deepstack, cls)
        with torch.device(self.device):  # random weights made on the device: nothing crosses a bus
            return build(folder, self.dtype, None, deepstack, cls)

    def stages(self) -> dict:
        """Each stage's peak (weights included) measured, traced (same config, fake tensors) and
        planned, in MiB."""
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode

        from .runtime import trace
        from .runtime.memory import GiB, activation_gib

        side, rows = self.image, {}
        calls = {
            f"text encode {trace.CAPTION_TOKENS} tokens": ("text_encoder", "Qwen3Model",
                                                           lambda m, f: trace.text_encode(m), 0, False),
            f"DiT step {side}x{side}": ("transformer", None,
                                        lambda m, f: trace.dit_step(m, side, side, self.dtype, f, self.caption(m)),
                                        side * side, False),
            f"VAE decode {side}x{side}": ("vae", None,
                                          lambda m, f: trace.vae_decode(m, side, False, self.dtype, f),
                                          side * side, False),
            f"VAE decode {2 * side}x{2 * side} tiled": ("vae", None,
                                                        lambda m, f: trace.vae_decode(m, 2 * side, True, self.dtype, f),
                                                        4 * side * side, True),
            f"VL extraction {side * side:,} px": ("vl", "Qwen3VLForConditionalGeneration",
                                                  lambda m, f: trace.vl_extract(m, side * side, self.dtype, f)[0],
                                                  side * side, False),
        }
        for name, (part, cls, make, pixels, tiled) in calls.items():
            fake = FakeTensorMode(allow_non_fake_inputs=True)
            twin = self.model(part, fake, cls)
            traced = trace.measure(twin, make(twin, fake), self.kernel)["peak_bytes"]
            model = self.model(part, None, cls)
            with torch.device(self.device):  # the inputs, and what the forward makes, on the device
                measured = _peak(self.device, model, make(model, None), self.kernel)
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            planned = weights + activation_gib(self.parts[part], pixels, self.dtype.itemsize, tiled, pixels,
                                               fused=self.device == "cuda") * GiB
            rows[name] = {"measured_mib": round(measured / 2**20, 2), "traced_mib": round(traced / 2**20, 2),
                          "planned_mib": round(planned / 2**20, 2)}
            del model, twin
            if self.device == "cuda":
                torch.cuda.empty_cache()
        return rows

    @staticmethod
    def caption(model) -> int:
        """512 caption tokens where the DiT's RoPE allows it (the tiny one stops at 288)."""
        from .runtime.trace import CAPTION_TOKENS

        return min(CAPTION_TOKENS, model.config.axes_lens[0] - 64)

    def pipeline(self):
        """Raw diffusers' ZImagePipeline over the random-weight models (no tokenizer: the proof
        passes embeddings)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
        pipe = ZImagePipeline(scheduler=scheduler, vae=self.model("vae"), text_encoder=None, tokenizer=None,
                              transformer=self.model("transformer"))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(self, pipe, steps: int) -> float:
        import torch

        embeds = [torch.randn(64, pipe.transformer.config.cap_feat_dim, dtype=self.dtype, device=self.device)]
        t = time.perf_counter()
        with torch.no_grad():
            pipe(prompt_embeds=embeds, height=self.image, width=self.image, num_inference_steps=steps,
                 guidance_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="latent")
        if self.device == "cuda":
            torch.cuda.synchronize()
        return round(time.perf_counter() - t, 3)

    def p5(self) -> dict:
        """Seconds per 8-step image (latents out; 1 step in a dry run) per attention backend, after a warm-up."""
        pipe, rows = self.pipeline(), {}
        backends = ["native"] + (["flash"] if importlib.util.find_spec("flash_attn") else [])
        for backend in backends:
            pipe.transformer.set_attention_backend(backend)
            self.generate(pipe, 1)
            rows[backend] = {"steps": self.steps, "seconds_per_image": self.generate(pipe, self.steps)}
        return rows

    def caps(self) -> dict:
        """The plan's choice for each simulated card, and (on a GPU) its measured DiT-stage peak."""
        import torch

        from .runtime.memory import GiB, plan

        rows = {}
        for cap in CAPS_GIB:
            chosen = plan(self.parts, cap, device="cuda", height=self.image, width=self.image)
            row = {"plan": chosen.name, "planned_generate_gib": chosen.peaks_gib["generate"]}
            if self.device == "cuda" and chosen.placement.offload == "none" and not any(
                    v != "none" for v in chosen.placement.quantize.values()):
                total = torch.cuda.get_device_properties(0).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GiB / total))
                try:
                    pipe = self.pipeline()
                    torch.cuda.reset_peak_memory_stats()
                    row["seconds"] = self.generate(pipe, 2)
                    row["measured_peak_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 3)
                except torch.OutOfMemoryError as err:
                    row["error"] = str(err).splitlines()[0][:200]
                finally:
                    torch.cuda.set_per_process_memory_fraction(1.0)
                    torch.cuda.empty_cache()
            else:
                row["measured"] = "not run: " + ("no GPU" if self.device != "cuda" else
                                                 "offloaded or quantized placements load through from_pretrained")
            rows[f"{cap} GiB"] = row
        return rows

    def compile(self) -> dict:
        if self.device != "cuda":
            return {"skipped": "compilation is measured on a GPU only"}
        pipe = self.pipeline()
        pipe.transformer.compile_repeated_blocks()
        first = self.generate(pipe, 1)
        return {"first_step_s": first, "seconds_per_image": self.generate(pipe, self.steps)}


def table(result: dict) -> str:
    """The proof as a markdown table: one row per measured item."""
    lines = [f"GPU proof on {result['device']} ({result['size']} sizes, {result['image']}²)", "",
             "| part | item | result |", "|---|---|---|"]
    for part in ("install", "stages", "P5", "caps", "compile"):
        value = result["parts"].get(part)
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            for item, row in value.items():
                lines.append(f"| {part} | {item} | {', '.join(f'{k} {v}' for k, v in row.items())} |")
        else:
            lines.append(f"| {part} | | {value} |")
    lines.append("| time | seconds per part | " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m llm_dit.bench gpu-proof", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (seconds)")
    parser.add_argument("--limit-s", type=float, default=480, help="time for all parts (default 8 minutes)")
    parser.add_argument("--image", type=int, default=None, help="image side (default 1024; 128 in a dry run)")
    parser.add_argument("--no-install", action="store_true", help="skip pip install -r requirements.txt")
    parser.add_argument("--json", default="gpu-proof.json")
    parser.add_argument("--md", default="gpu-proof.md")
    args = parser.parse_args(argv)
    clock, parts = Clock(args.limit_s), {}
    if args.dry_run or args.no_install:
        parts["install"] = "skipped"
    else:
        clock.run("install", install, parts)
    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-proof: no CUDA device here; use --dry-run for the CPU rehearsal.")
    size, image = ("tiny", args.image or 128) if args.dry_run else ("full", args.image or 1024)
    with tempfile.TemporaryDirectory() as tmp:
        proof = Proof(device, size, image, Path(tmp))
        for name, fn in (("stages", proof.stages), ("P5", proof.p5), ("caps", proof.caps), ("compile", proof.compile)):
            clock.run(name, fn, parts)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "size": size, "image": image,
              "torch": torch.__version__, "limit_s": args.limit_s, "parts": parts, "seconds": clock.seconds}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.md).write_text(table(result) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main()

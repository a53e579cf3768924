"""The GPU proof in one command, inside one short device loan (`python -m llm_dit.bench gpu-proof`).

On a bare CUDA machine: installs the requirements (keeping the machine's torch), builds the
released architectures with random weights directly on the GPU in bf16 (no checkpoint on disk;
our model manager adopts the built models, `ModelManager.adopt`), then, in this order, each part
only while the time left (`--limit-s`, default 8 minutes, install included) covers the budget it
is sized for on an H100 (`BUDGET_S`; estimates: no GPU has run it yet):

  install  pip install -r requirements.txt, the machine's torch kept            ~90 s
  stages   each stage's measured CUDA peak beside its traced and planned peak (text encode, DiT
           step, VAE decode whole and tiled, Qwen3-VL extraction)                  ~60 s
  P5       txt2img at 1024², 8 steps, prompt to image: ours (the manager's `txt2img`) vs raw
           diffusers' `ZImagePipeline(prompt=...)` on the same modules, after a warm-up, native
           attention then flash if importable; seconds, peaks and the ratio ours / raw   ~60 s
  VL       the VL recipe end to end through our pipeline: extraction of a 1024² reference,
           blend, img2img at 1024² (`vl_generate`); seconds per stage and peak          ~40 s
  caps     the plan table's placements as our manager places them under simulated 24 / 16 / 12
           GiB cards (`set_per_process_memory_fraction`): the plan at each budget, then model and
           group offload at 12 GiB; measured peak against the planned one and the cap    ~150 s
  compile  regional compilation of the DiT (`compile_repeated_blocks`), if time is left  ~90 s

With machine start (~2 min) the whole fits a 15-minute loan. A part that is skipped or fails
says so, and why, in the JSON and the markdown table, and the others keep their results; both
files are rewritten after every part, so a run killed from outside leaves what it had. It writes one JSON and a markdown table and prints the seconds each part
took. `--dry-run` runs the same parts on the CPU with the tiny architectures in seconds (the test
suite does, so the command cannot rot); there "measured" is MemTracker on the real tensors.
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
PROMPT = "a red fox in the snow at dawn, detailed photo"
PARTS = {"stages": "stages", "P5": "p5", "VL": "recipe", "caps": "caps", "compile": "compile"}  # part: method
BUDGET_S = {"stages": 60, "P5": 60, "VL": 40, "caps": 150, "compile": 90}  # on an H100 (estimates)


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
    """The time limit: a part starts only while the time left covers its budget (`BUDGET_S` on a
    GPU; none in a dry run), so the proof ends between parts; each part's seconds are kept."""

    def __init__(self, limit_s: float, budgets: dict | None = None):
        self.start, self.limit_s, self.budgets, self.seconds = time.perf_counter(), limit_s, budgets or {}, {}

    def left(self) -> float:
        return self.limit_s - (time.perf_counter() - self.start)

    def run(self, name: str, fn, results: dict) -> None:
        left, needs = self.left(), self.budgets.get(name, 0)
        if left <= 0 or left < needs:
            results[name] = {"skipped": f"time limit: {max(left, 0):.0f} s of {self.limit_s:.0f} s left"
                                        + (f", the part needs ~{needs} s" if needs else "")}
            print(f"{name}: {results[name]['skipped']}", flush=True)
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
    def __init__(self, device: str, size: str, image: int, folder: Path, cache_dir: Path | None = None):
        import torch

        from .runtime.memory import read_components
        from .runtime.tiny import write_metadata_only

        self.device, self.image, self.size, self.outputs, self._built = device, image, size, folder / "outputs", None
        self.steps = 8 if device == "cuda" else 1  # the dry run only walks the path
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.kernel = "fused" if device == "cuda" else "default"
        self.zimage, self.vl = write_metadata_only(folder, size)
        self.parts = read_components(self.zimage, self.vl)
        self._add_tokenizers(cache_dir)

    def model(self, part: str, fake=None, cls: str | None = None, deepstack: bool = False):
        import torch

        from .runtime.trace import build

        folder = self.vl if part == "vl" else self.zimage / part
        deepstack = deepstack or part != "vl"  # the stages leave it out, as the trace (see runtime/trace.py)
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

    def _add_tokenizers(self, cache_dir: Path | None) -> None:
        """The tiny checkpoints' tokenizer, scheduler and VL processor beside the metadata (the
        real ones are not on a bare machine); the VL config gets that tokenizer's image token ids."""
        import shutil

        from .runtime.tiny import ensure_tiny_qwen3_vl, ensure_tiny_zimage

        tiny_zimage, tiny_vl = ensure_tiny_zimage(cache_dir=cache_dir), ensure_tiny_qwen3_vl(cache_dir=cache_dir)
        for part in ("tokenizer", "scheduler"):
            shutil.copytree(tiny_zimage / part, self.zimage / part)
        shutil.copy(tiny_zimage / "model_index.json", self.zimage)
        for path in tiny_vl.iterdir():
            if path.suffix != ".safetensors" and path.name not in ("config.json", "model.safetensors.index.json",
                                                                    ".complete"):
                shutil.copy(path, self.vl)
        tiny, config = json.loads((tiny_vl / "config.json").read_text()), json.loads((self.vl / "config.json").read_text())
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            config[key] = tiny[key]
        (self.vl / "config.json").write_text(json.dumps(config, indent=2))

    def built(self) -> dict:
        """The models our manager adopts and raw diffusers runs, built once on the device: a
        `ZImagePipeline` (DiT, VAE, tokenizer, scheduler), the text encoder as `Qwen3ForCausalLM`
        and (Qwen3-VL, processor)."""
        if self._built is None:
            from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
            from transformers import Qwen2Tokenizer

            from .conditioning.vl import ImageOnlyProcessor

            pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(self.zimage / "scheduler"),
                                  vae=self.model("vae"), text_encoder=None, transformer=self.model("transformer"),
                                  tokenizer=Qwen2Tokenizer.from_pretrained(self.zimage / "tokenizer"))
            lm = self.model("text_encoder", cls="Qwen3ForCausalLM")
            vl = (self.model("vl", cls="Qwen3VLForConditionalGeneration", deepstack=True),
                  ImageOnlyProcessor.from_pretrained(self.vl))
            self._built = {"pipeline": pipe, "language_model": lm, "vl": vl}
        return self._built

    def manager(self, **settings):
        """Our model manager over the built models, placed by its plan for `settings`."""
        from .runtime.models import ModelManager
        from .runtime.settings import Settings

        values = {"model_path": str(self.zimage), "vl_model_path": str(self.vl), "output_dir": str(self.outputs),
                  "dtype": "bfloat16" if self.device == "cuda" else "float32", **settings}
        if self.device == "cuda" and "memory_budget" not in settings:  # the whole card, as its owner has it
            import torch

            values["memory_budget"] = str(round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        return ModelManager.adopt(Settings(**values), **self.built(), label=f"random-weight {self.size} architecture")

    def raw(self):
        """Raw diffusers' `ZImagePipeline` over the same modules, with the text encoder."""
        from diffusers import ZImagePipeline

        built = self.built()
        pipe = built["pipeline"]
        raw = ZImagePipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=built["language_model"].model,
                             tokenizer=pipe.tokenizer, transformer=pipe.transformer)
        raw.set_progress_bar_config(disable=True)
        return raw

    def request(self, cls=None, **values):
        from .core.request import GenerationRequest

        values = {"prompt": PROMPT, "height": self.image, "width": self.image, "num_inference_steps": self.steps,
                  "seed": 0, **values}
        return (cls or GenerationRequest)(**values)

    def p5(self) -> dict:
        """Seconds per image, prompt to picture (8 steps; 1 in a dry run), after a warm-up, per
        attention backend: ours (the manager's txt2img, its prompt cache cleared so the text
        encoder runs as raw diffusers' does) and raw diffusers on the same modules."""
        manager, raw = self.manager(), self.raw()
        rows = {"native": self._p5_row(manager, raw, "native")}
        if importlib.util.find_spec("flash_attn"):
            try:
                rows["flash"] = self._p5_row(manager, raw, "flash")
            except Exception as err:  # noqa: BLE001 - the native row stands
                rows["flash"] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
        return rows

    def _p5_row(self, manager, raw, backend: str) -> dict:
        import torch

        from .pipelines.generate import txt2img

        def ours():
            manager.text_cache.clear()
            return txt2img(manager, self.request(attention_backend=backend))

        def theirs():
            raw.transformer.set_attention_backend(backend)
            return raw(prompt=PROMPT, height=self.image, width=self.image, num_inference_steps=self.steps,
                       guidance_scale=0.0, generator=torch.Generator().manual_seed(0)).images[0]

        row = {"steps": self.steps}
        for side, call in (("raw", theirs), ("ours", ours)):
            self.warm_up(call)
            row[f"{side}_s"], row[f"{side}_peak_gib"] = self.timed(call)
        row["ours_over_raw"] = round(row["ours_s"] / row["raw_s"], 3)
        return row

    def recipe(self) -> dict:
        """The VL recipe end to end through our pipeline: a reference of the image's size,
        extraction at the default pixel budget, linear blend, img2img at strength 0.6; seconds
        per stage (the result's timeline) and peak, after a warm-up."""
        import numpy as np
        from PIL import Image

        from .core.request import VLRequest
        from .pipelines.recipe import vl_generate

        manager = self.manager()
        pixels = np.random.default_rng(0).integers(0, 256, (self.image, self.image, 3), dtype=np.uint8)
        reference = Image.fromarray(pixels)
        request = self.request(VLRequest, strength=0.6, num_inference_steps=max(2, self.steps))  # >= 1 forward
        result = {}

        def call():
            manager.vl_cache.clear(), manager.text_cache.clear()  # the extraction and the encode run again
            result["last"] = vl_generate(manager, request, [reference])

        self.warm_up(call)
        seconds, peak = self.timed(call)
        meta = result["last"].metadata
        return {"img2img": {"seconds": seconds, "peak_gib": peak, **{f"{k}_s": v for k, v in meta["timings"].items()},
                            "vl_tokens": meta["vl"]["extractions"][0]["tokens"], "model": meta["model"]}}

    def caps(self) -> dict:
        """The plan's placements under simulated cards, as our manager places them: the plan at 24,
        16 and 12 GiB, then model offload at 16 GiB and group offload at 12 GiB, where the plan
        expects them to fit (no quantization: adopted models are not quantized). Measured: the peak
        of a 2-step txt2img (weights included) under the cap. The VL model leaves first (unused)."""
        import gc

        import torch

        from .pipelines.generate import txt2img
        from .runtime.memory import GiB, overrides, plan
        from .runtime.settings import Settings

        none = {f"quantize_{n}": "none" for n in ("transformer", "text_encoder", "vl")}
        runs = [(f"{cap} GiB: plan", cap, {}) for cap in CAPS_GIB]
        runs += [("16 GiB: model offload", 16, {"offload": "model", **none}),
                 ("12 GiB: group offload", 12, {"offload": "group", **none})]  # last: it cannot be undone
        self.built()["vl"] = None
        gc.collect()
        rows = {}
        for name, cap, extra in runs:
            settings = {"memory_budget": str(cap), **extra}
            planned = plan(self.parts, cap, "cuda", overrides=overrides(Settings(**settings)),
                           height=self.image, width=self.image)
            row = {"plan": f"{extra['offload']} offload, as set" if extra else planned.name,
                   "offload": planned.placement.offload,
                   "text_encoder": "GPU" if planned.placement.text_encoder_on_gpu else "CPU",
                   "planned_gib": planned.peaks_gib["generate"]}
            quantized = {k: v for k, v in planned.placement.quantize.items() if v != "none"}
            if quantized:
                row["measured"] = f"not run: the plan quantizes {quantized}, which happens as weights load"
                rows[name] = row
                continue
            self.unhook()
            gc.collect()
            manager = self.manager(**settings)
            manager.language_model()  # placed now, before the cap: the cap measures the generation
            capped = self.device == "cuda"
            if capped:
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GiB / torch.cuda.get_device_properties(0).total_memory))
            try:
                request = self.request(num_inference_steps=min(2, self.steps))
                done = {}
                row["seconds"], row["measured_gib"] = self.timed(lambda: done.update(image=txt2img(manager, request)))
                row["metadata_offload"] = done["image"].metadata["memory"]["offload"]  # what the image records
                row["measured_over_planned"] = round(row["measured_gib"] / row["planned_gib"], 3)
                row["under_cap"] = row["measured_gib"] <= cap
            except torch.OutOfMemoryError as err:
                row["error"] = "out of memory under the cap: " + str(err).splitlines()[0][:160]
            finally:
                if capped:
                    torch.cuda.set_per_process_memory_fraction(1.0)
            rows[name] = row
        self._built = None  # group-offloaded now: what follows builds afresh
        return rows

    def unhook(self) -> None:
        """Take the last placement's model-offload hooks off the built models (accelerate's
        remover), so the next manager places them afresh. Group offload has no remover: it runs last."""
        from accelerate.hooks import remove_hook_from_module

        built = self.built()
        for module in (built["language_model"], built["pipeline"].transformer):
            remove_hook_from_module(module, recurse=True)

    def warm_up(self, call) -> None:
        """One untimed call first on a GPU (first-call kernels, placement); a dry run only walks the path."""
        if self.device == "cuda":
            call()

    def timed(self, call) -> tuple[float, float]:
        """Seconds and peak GiB of `call()`, everything resident counted (weights included): CUDA's
        allocator on a GPU; on the CPU the process's RSS high-water mark (only the path matters there)."""
        import torch

        if self.device == "cpu":
            from .bench_memory import _peak_added, _reset_peak

            before, t = _reset_peak(), time.perf_counter()
            call()
            return round(time.perf_counter() - t, 3), round((_peak_added(before) + before) / 2**30, 3)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        call()
        torch.cuda.synchronize()
        return round(time.perf_counter() - t, 3), round(torch.cuda.max_memory_allocated() / 2**30, 3)

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
    for part in ("install", *PARTS):
        value = result["parts"].get(part, {"skipped": "not reached: the run stopped before it"})
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
    parser.add_argument("--cache-dir", default=None, help="where the tiny checkpoints (their tokenizers) are built")
    parser.add_argument("--json", default="gpu-proof.json")
    parser.add_argument("--md", default="gpu-proof.md")
    args = parser.parse_args(argv)
    clock, parts = Clock(args.limit_s, None if args.dry_run else BUDGET_S), {}
    if args.dry_run or args.no_install:
        parts["install"] = "skipped"
    else:
        clock.run("install", install, parts)
    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-proof: no CUDA device here; use --dry-run for the CPU rehearsal.")
    size, image = ("tiny", args.image or 128) if args.dry_run else ("full", args.image or 1024)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "size": size, "image": image,
              "torch": torch.__version__, "limit_s": args.limit_s, "parts": parts, "seconds": clock.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        proof = Proof(device, size, image, Path(tmp), args.cache_dir and Path(args.cache_dir))
        for name in PARTS:
            clock.run(name, getattr(proof, PARTS[name]), parts)
            _write(result, args)  # after every part: a run killed later still leaves what it had
    print(table(result))
    return result


def _write(result: dict, args) -> None:
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.md).write_text(table(result) + "\n")


if __name__ == "__main__":
    main()

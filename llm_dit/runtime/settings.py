"""The one settings object of the app, filled from CLI flags and environment variables.

Every option has one flag and one environment variable (`LLM_DIT_` + the flag's name in upper
case, dashes as underscores); a flag given on the command line wins over the environment, which
wins over the default. Nothing else in the code reads the environment for these values.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

ZIMAGE_REPO = "Tongyi-MAI/Z-Image-Turbo"
VL_REPO = "Qwen/Qwen3-VL-4B-Instruct"
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPES = ("auto", "bfloat16", "float16", "float32")
HOSTING = ("auto", "hosted", "local")
OFFLOADS = ("auto", "none", "model", "group", "sequential")
QUANTIZATIONS = ("auto", "none", "int8", "fp8", "nf4")
SWITCHES = ("auto", "on", "off")
VARIANTS = ("auto", "turbo", "base")  # llm_dit.runtime.checkpoints.detect_variant
CHOICES = {"model_variant": VARIANTS, "dtype": DTYPES, "offload": OFFLOADS, "quantize_transformer": QUANTIZATIONS,
           "quantize_text_encoder": QUANTIZATIONS, "quantize_vl": QUANTIZATIONS, "vae_tiling": SWITCHES}


@dataclass(frozen=True)
class Settings:
    model_path: str = ZIMAGE_REPO
    transformer_file: str = ""  # a single-file (.safetensors) or GGUF DiT replacing model_path's transformer
    model_variant: str = "auto"  # turbo or base (auto: from the checkpoint's configs or name)
    controlnet_path: str = ""  # a Z-Image ControlNet (union): hub id, folder or single .safetensors
    vl_model_path: str = VL_REPO
    tiny: bool = False
    hub_timeout: int = 5  # seconds the hub has to say what a first-use download fetches
    text_encoder_device: str = "auto"
    transformer_device: str = "auto"
    vae_device: str = "auto"
    vl_device: str = "auto"  # auto = the memory plan decides (the CPU when there is no accelerator)
    dtype: str = "auto"
    # Memory levers: "auto" lets the placement plan (llm_dit.runtime.memory) choose; any other value wins.
    memory_budget: str = "auto"  # GiB of accelerator memory the models may use; auto = what is free
    offload: str = "auto"
    quantize_transformer: str = "auto"
    quantize_text_encoder: str = "auto"
    quantize_vl: str = "auto"
    vae_tiling: str = "auto"  # auto = tile above vae_tiling_pixels (or when the plan needs it)
    vae_tiling_pixels: int = 1536 * 1536
    compile: bool = False  # regional compilation of the DiT's repeated blocks
    vl_auto_unload: bool = True  # release the VL model after each extraction
    vl_cache_size: int = 32  # extractions kept (LRU)
    text_cache_size: int = 64  # prompt encodings kept (LRU): a repeated prompt is not re-encoded
    vl_min_pixels: int = 64 * 64  # the reference's pixel budget: fixes the image token count
    vl_max_pixels: int = 1024 * 1024
    cache_dir: str = ""  # where the tiny checkpoints are built; "" = ~/.cache/llm_dit
    output_dir: str = "outputs"  # every generated PNG is kept here
    history_size: int = 48  # results kept in each browser session's history gallery
    metrics_model: str = ""  # a local CLIP or SigLIP folder: sweeps score style and content with it
    zero_gpu: bool = False  # on a ZeroGPU Space: models placed at start-up, never offloaded
    host: str = ""  # "" = gradio's default (GRADIO_SERVER_NAME, else 127.0.0.1; Spaces set 0.0.0.0)
    port: int = 0  # 0 = gradio's default (GRADIO_SERVER_PORT, else the first free port from 7860)
    share: bool = False  # a public gradio share link
    # hosting policy (llm_dit.serving.policy): what remote clients may choose and how much they may use
    hosting: str = "auto"  # auto = hosted on a Space, off loopback or with a share link
    rewrite_servers: str = ""  # TOML file of OpenAI-compatible servers clients pick by name
    lora_dir: str = ""  # folder of .safetensors LoRAs clients pick by name
    output_keep: int = -1  # files kept in output_dir; -1 = auto (500 hosted, all locally), 0 = all
    max_upload_mb: int = 50  # largest upload accepted
    max_pending: int = 2  # hosted: jobs one browser session may have queued or running
    max_pending_client: int = 8  # hosted: jobs one client address may have queued or running
    trusted_proxy: str = ""  # address or network of the reverse proxy whose X-Forwarded-For names the client
    # budgets per request (llm_dit.serving.budgets): -1 = the mode's default, 0 = none
    max_image_pixels: int = -1
    max_output_pixels: int = -1
    max_steps: int = -1
    max_cells: int = -1
    max_work: int = -1  # megapixel-steps: height × width / 2**20 × steps × cells
    max_batch_pixels: int = -1  # output pixels of one batch: batch_size × height × width
    max_body_mb: int = -1  # -1 = room for an inline data: URL of the largest upload
    text_encoder_url: str = ""  # another running instance encodes prompts (no local Qwen3-4B)
    vl_url: str = ""  # another running instance runs the VL extractions (no local Qwen3-VL)
    mcp_server: bool = False  # also serve the API as MCP tools (needs the gradio[mcp] extra)

    def __post_init__(self):
        for name in ("text_encoder_device", "transformer_device", "vae_device", "vl_device"):
            value = getattr(self, name)
            if not DEVICE_PATTERN.fullmatch(value):
                raise ValueError(f"{name}={value!r} is not a device: use one of {', '.join(DEVICES)}.")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported: use one of {', '.join(choices)}.")
        if self.transformer_file and not self.transformer_file.lower().endswith((".safetensors", ".sft", ".gguf")):
            raise ValueError(f"transformer_file={self.transformer_file!r} is neither a .safetensors nor a .gguf file: "
                             f"give a single-file Z-Image transformer or a GGUF one ('' = the --model-path one).")
        if self.memory_budget != "auto":
            try:
                budget = float(self.memory_budget)
            except ValueError:
                budget = -1.0
            if not budget > 0:
                raise ValueError(f"memory_budget={self.memory_budget!r} is not a size: give GiB (e.g. 24) or auto.")
        if self.vae_tiling_pixels < 64 * 64:
            raise ValueError(f"vae_tiling_pixels={self.vae_tiling_pixels} is too small: use at least 4096.")
        if self.hub_timeout < 1:
            raise ValueError(f"hub_timeout={self.hub_timeout} must be at least 1 (seconds).")
        if self.history_size < 1:
            raise ValueError(f"history_size={self.history_size} must be at least 1.")
        for name in ("vl_cache_size", "text_cache_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 or more (0 turns the cache off).")
        if not 0 < self.vl_min_pixels <= self.vl_max_pixels:
            raise ValueError(
                f"vl_min_pixels={self.vl_min_pixels} / vl_max_pixels={self.vl_max_pixels}: "
                f"need 0 < min <= max (e.g. 4096 and 1048576)."
            )
        if self.hosting not in HOSTING:
            raise ValueError(f"hosting={self.hosting!r} is unknown: use one of {', '.join(HOSTING)}.")
        for name in ("max_image_pixels", "max_output_pixels", "max_steps", "max_cells", "max_work", "max_batch_pixels",
                     "max_body_mb"):
            if getattr(self, name) < -1:
                raise ValueError(f"{name}={getattr(self, name)}: use -1 (the mode's default), 0 (no budget) or a "
                                 f"positive budget.")
        if self.trusted_proxy and not is_network(self.trusted_proxy):
            raise ValueError(f"trusted_proxy={self.trusted_proxy!r} is not an IP address or network: give the "
                             f"address your reverse proxy connects from (e.g. 10.0.0.5 or 10.0.0.0/8), or '' for none.")
        for name in ("max_upload_mb", "max_pending", "max_pending_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.output_keep < -1:
            raise ValueError(f"output_keep={self.output_keep}: use -1 (auto), 0 (keep all) or a count.")
        for name in ("text_encoder_url", "vl_url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                raise ValueError(f"{name}={value!r} is not an http(s) URL: give a running instance's address, "
                                 f"e.g. http://127.0.0.1:7860/ (or '' to load the model here).")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port={self.port} is out of range: use 1-65535 (0 = gradio's default).")

    @property
    def tiny_cache_dir(self) -> Path | None:
        return Path(self.cache_dir) if self.cache_dir else None


_HELP = {
    "model_path": "Z-Image checkpoint: a hub id or a local folder in that repo's layout",
    "transformer_file": "a single-file Z-Image transformer (.safetensors in the ComfyUI/official layout: bf16, fp16 "
                        "or fp8 e4m3fn, upcast to --dtype) or a GGUF one (.gguf: Q8_0, Q4_K, ..., computed in "
                        "--dtype), a local path or a huggingface.co file URL; the rest comes from --model-path "
                        "('' = the transformer of --model-path)",
    "model_variant": "Z-Image variant: turbo (distilled: 8 steps, no CFG) or base (CFG, negative prompt, more "
                     "steps); auto = from the checkpoint's configs (the repo it was saved from, the scheduler's shift: 6 Base, 3 "
                     "Turbo), else its name (Z-Image-Turbo vs Z-Image)",
    "controlnet_path": "a Z-Image ControlNet (e.g. the union model alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union): "
                       "a hub id or folder in diffusers' layout, or one .safetensors file; loaded on the first "
                       "request with a control image ('' = no structure control)",
    "vl_model_path": "Qwen3-VL checkpoint: a hub id or a local folder",
    "hub_timeout": "seconds the Hugging Face hub has to answer what a first-use download of a hub id fetches; "
                   "without an answer the load fails at once with the fix (the download itself has no limit)",
    "tiny": "use offline tiny random-weight models (images are noise; for demos and tests)",
    "text_encoder_device": "device of the Qwen3 text encoder",
    "transformer_device": "device of the DiT",
    "vae_device": "device of the VAE",
    "vl_device": "device of the Qwen3-VL model",
    "dtype": "weights dtype; auto = bfloat16 on cuda, float32 elsewhere",
    "memory_budget": "accelerator memory (GiB) the models may use; auto = the free memory. The placement plan "
                     "picks the fastest placement that fits; the settings below override it",
    "offload": "offload of the DiT and text encoder: none, model (whole models), group (block level), sequential",
    "quantize_transformer": "quantize the DiT: none, int8 (torchao weight-only), fp8 (Hopper), nf4 (bitsandbytes)",
    "quantize_text_encoder": "quantize the Qwen3 text encoder (same choices)",
    "quantize_vl": "quantize the Qwen3-VL model (same choices)",
    "vae_tiling": "VAE tiling and slicing for decode and img2img encode: on, off, auto (above vae-tiling-pixels)",
    "vae_tiling_pixels": "auto VAE tiling starts above this many pixels",
    "compile": "regional torch.compile of the DiT's repeated blocks (off on ZeroGPU)",
    "vl_auto_unload": "release the Qwen3-VL model after each extraction (frees its memory)",
    "vl_cache_size": "how many VL extractions to keep in the LRU cache",
    "text_cache_size": "how many prompt encodings to keep (a repeated prompt is not re-encoded)",
    "vl_min_pixels": "smallest pixel count a reference is resized to for Qwen3-VL",
    "vl_max_pixels": "largest pixel count a reference is resized to (~1 token per 32x32 px)",
    "cache_dir": "folder for the tiny checkpoints (default ~/.cache/llm_dit)",
    "output_dir": "folder where every generated PNG (with its metadata) is saved",
    "history_size": "how many results the history gallery keeps per browser session",
    "metrics_model": "a local CLIP or SigLIP folder (transformers layout): sweep cells get image-to-reference "
                     "and image-to-prompt similarity ('' = only the cheap metrics)",
    "zero_gpu": "Hugging Face ZeroGPU mode: load every model at start-up on cuda and keep it (default: on when "
                "SPACES_ZERO_GPU is set)",
    "host": "address the web server listens on ('' = gradio's default)",
    "port": "port the web server listens on (0 = gradio's default)",
    "share": "open a public gradio share link (makes the app hosted)",
    "hosting": "hosted: remote clients may choose only what the operator listed (rewrite servers, LoRAs), no "
               "admin actions, no server paths shown; local: the user is the operator; auto: hosted on a Space, "
               "off loopback or with --share",
    "rewrite_servers": "TOML file of OpenAI-compatible rewrite servers ([servers.NAME] base_url, api_key_env, "
                       "models) that clients choose by name",
    "lora_dir": "folder of .safetensors LoRAs that clients choose by name",
    "output_keep": "how many files to keep in the output folder (PNGs, exports, sweep tables and cells, and "
                   "every file of the sweep and study folders under studies/, each folder removed whole once "
                   "finished, never while it runs; files of yours there are never touched), oldest deleted first "
                   "(-1 = 500 when hosted, all locally; 0 = all)",
    "max_upload_mb": "largest upload accepted, in MB, per file; hosted, one upload request may carry 8 such "
                     "files (the most references one generation takes) + 1 MB, all its files together",
    "max_pending": "hosted: jobs one browser session may have waiting or running at once",
    "max_pending_client": "hosted: jobs one client (peer address, or the forwarded one behind --trusted-proxy) "
                          "may have waiting or running at once, over all its sessions",
    "trusted_proxy": "IP address or network of a reverse proxy in front of the app: only from it is "
                     "X-Forwarded-For believed as the client address ('' = the peer address is the client)",
    "max_image_pixels": "largest image input in pixels, read from its header before decoding (-1 = 16,777,216 "
                        "hosted, 89,478,485 locally; 0 = none)",
    "max_output_pixels": "largest output image, height × width in pixels (-1 = 4,194,304 hosted, none locally)",
    "max_steps": "most num_inference_steps per image (-1 = 50 hosted, none locally)",
    "max_cells": "most cells in one sweep or study (-1 = 64 hosted, none locally)",
    "max_work": "most megapixel-steps (height × width / 2**20 × steps × cells) in one request (-1 = 400 hosted, "
                "none locally)",
    "max_batch_pixels": "most output pixels generated together in one batch: a sweep's or study's batch_size × "
                        "height × width (-1 = 4,194,304 hosted, as one largest image; none locally)",
    "max_body_mb": "largest HTTP request body in MB, inline data: URLs included (-1 = the upload cap × 4/3 + 1, "
                   "room for one upload-sized image as base64; 0 = none)",
    "text_encoder_url": "URL of another running instance that encodes prompts for this one (it then loads no "
                        "Qwen3-4B; '' = encode here)",
    "vl_url": "URL of another running instance that runs the VL extractions for this one (it then loads no "
              "Qwen3-VL; '' = extract here)",
    "mcp_server": "also serve the app's API as MCP tools at /gradio_api/mcp/ (needs the gradio[mcp] extra)",
}


def is_network(text: str) -> bool:
    """An IP address or network (10.0.0.5, 10.0.0.0/8)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def env_name(field_name: str) -> str:
    return "LLM_DIT_" + field_name.upper()


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{env_name(name)}={text!r} is not a boolean: use 1/0, true/false, yes/no.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Z-Image VL Studio")
    add_arguments(parser)
    return parser


def add_arguments(parser) -> None:
    """One flag per setting, on `parser` (or an argument group); unset flags parse as None."""
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP[f.name]} (env {env_name(f.name)}; default {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            choices = {**CHOICES, "hosting": HOSTING}.get(f.name)
            kind = int if f.type in ("int", int) else str
            parser.add_argument(flag, type=kind, default=None, choices=choices, help=help_text)


def zero_gpu_from_env(value: str | None) -> bool:
    """`SPACES_ZERO_GPU` read exactly as the `spaces` package reads it (1, t or true; any case)."""
    return value is not None and value.lower() in ("1", "t", "true")


def load_settings(argv: list[str] | None = None, environ: dict | None = None) -> Settings:
    """Settings from flags (highest), then environment variables, then defaults."""
    return settings_from_args(vars(build_parser().parse_args(argv if argv is not None else [])), environ)


def settings_from_args(args: dict, environ: dict | None = None) -> Settings:
    """Settings from parsed flags (None = not given), then environment variables, then defaults."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        if args[f.name] is not None:
            values[f.name] = args[f.name]
        elif env_name(f.name) in environ:
            raw = environ[env_name(f.name)]
            if f.type in ("bool", bool):
                values[f.name] = _parse_bool(f.name, raw)
            elif f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{env_name(f.name)}={raw!r} is not an integer.") from None
            else:
                values[f.name] = raw
    if "zero_gpu" not in values and zero_gpu_from_env(environ.get("SPACES_ZERO_GPU")):
        values["zero_gpu"] = True
    if values.get("zero_gpu"):
        # ZeroGPU forks a worker per call: loading, caching or offloading inside a call does not
        # carry over, so every model is placed on cuda at start-up and stays there (FACTS.md).
        values["vl_auto_unload"] = False
        values["compile"] = False  # ZeroGPU has no runtime compilation
        values["offload"] = "none"
        for name in ("text_encoder_device", "transformer_device", "vae_device", "vl_device"):
            values[name] = "cuda"
    return Settings(**values)

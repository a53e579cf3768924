"""The model manager: loads each model lazily on first use, once, under a lock.

The page is served before anything loads. The Qwen3 text encoder is loaded once as
`Qwen3ForCausalLM` (its tied head restores the LM head the Z-Image repo leaves out), so the same
weights serve embedding extraction (`lm.model`, passed to the pipeline) and text generation.
The txt2img and img2img pipelines that run are views made with diffusers' `from_pipe`: they share
the one loaded DiT.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
from collections import Counter
from contextlib import contextmanager, nullcontext

import torch

from . import policy
from .cache import LRUCache
from .settings import VL_REPO, ZIMAGE_REPO, Settings



class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which, where we looked and how to fix it."""


def resolve_device(name: str, check: bool = True) -> torch.device:
    """A torch device for a setting; `check=False` trusts "cuda" (ZeroGPU attaches the GPU per call)."""
    if not check:
        return torch.device("cuda" if name == "auto" else name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for, but torch sees no CUDA GPU: use --*-device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' was asked for, but this torch has no MPS backend: use cpu or auto.")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def release_memory() -> None:
    """Give freed memory back: Python's garbage, the CUDA allocator's blocks, glibc's heap."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # glibc keeps freed heap pages unless asked; without this, RSS never drops on Linux
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, counting shared (tied) storage once."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _is_local(source: str) -> bool:
    return os.path.isdir(source) or source.startswith(("/", ".", "~")) or os.path.isabs(source)


log = logging.getLogger(__name__)


def _load_error(what: str, source: str, err: Exception, repo: str, flag: str, hosted: bool = False) -> ModelLoadError:
    if hosted:  # remote clients learn no server path; the operator reads the log
        log.error("could not load the %s from %s: %s", what, source, err, exc_info=err)
        return ModelLoadError(f"The {what} could not be loaded on this server ({type(err).__name__}); the operator "
                              f"can read the details in the server log.")
    if _is_local(source):
        where = f"the local folder {os.path.abspath(os.path.expanduser(source))}"
    else:
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
        )
        where = f"the Hugging Face hub id {source!r} (local cache {cache})"
    return ModelLoadError(
        f"Could not load the {what} from {where}: {type(err).__name__}: {err}\n"
        f"To fix: download it where the hub is reachable (`hf download {repo} --local-dir DIR`) and "
        f"pass {flag} DIR (env LLM_DIT_{flag[2:].replace('-', '_').upper()}); or run with --tiny "
        f"for offline random-weight models."
    )


class ModelManager:
    """Owns every model of the app. Thread-safe; nothing is loaded until asked for."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.policy = policy.from_settings(settings)
        self._lock = threading.RLock()
        # The DiT's LoRA adapters and attention backend are module state: one generation at a time.
        self.generation_lock = threading.Lock()
        self.rewrite_lock = threading.Lock()  # local text generation seeds torch's global RNG
        self._pipe = None
        self._lm = None
        self._views = {}
        self.load_counts: Counter = Counter()
        self.last_timeline: list[dict] = []  # stages of the last generation, for the status panel
        self._vl_lock = threading.RLock()
        self._vl = None  # (Qwen3VLForConditionalGeneration, processor) while loaded
        self._vl_depth = 0  # nesting of vl_session()
        self._vl_config = None
        self._text_config = None
        self._reference_stats: dict = {}
        self.vl_cache = LRUCache(settings.vl_cache_size)
        self.text_cache = LRUCache(settings.text_cache_size)  # misses = text encoder runs
        self._scorer = None
        # Another running instance as the text encoder / VL model (operator settings only).
        self.remote_text = self.remote_vl = None
        if settings.text_encoder_url or settings.vl_url:
            from .remote import RemoteEncoder

            if settings.text_encoder_url:
                self.remote_text = RemoteEncoder(settings.text_encoder_url, "text encoder", "--text-encoder-url",
                                                 self.policy.hosted)
            if settings.vl_url:
                self.remote_vl = RemoteEncoder(settings.vl_url, "VL model", "--vl-url", self.policy.hosted)

    # ---- sources -----------------------------------------------------------------------------
    # With --tiny, both models come from offline random-weight folders built on first use.
    @property
    def zimage_source(self) -> str:
        from .tiny import ensure_tiny_zimage

        tiny = self.settings.tiny
        return str(ensure_tiny_zimage(cache_dir=self.settings.tiny_cache_dir)) if tiny else self.settings.model_path

    @property
    def vl_source(self) -> str:
        from .tiny import ensure_tiny_qwen3_vl

        tiny = self.settings.tiny
        return str(ensure_tiny_qwen3_vl(cache_dir=self.settings.tiny_cache_dir)) if tiny else self.settings.vl_model_path

    @property
    def zimage_model_id(self) -> str:
        return "tiny-random-zimage" if self.settings.tiny else self.policy.public_name(self.settings.model_path)

    @property
    def vl_model_id(self) -> str:
        if self.remote_vl:
            return self.remote_vl.shown
        return "tiny-random-qwen3-vl" if self.settings.tiny else self.policy.public_name(self.settings.vl_model_path)

    @property
    def text_encoder_id(self) -> str:
        return self.remote_text.shown if self.remote_text else self.zimage_model_id

    # ---- loading -----------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self._pipe is not None

    def pipeline(self):
        """The loaded `ZImagePipeline` (tokenizer, DiT, VAE, scheduler). Its text encoder loads
        on first use (`language_model`): a pure-VL generation never needs it."""
        if self._pipe is None:
            with self._lock:
                if self._pipe is None:
                    self._load_zimage()
        return self._pipe

    def language_model(self):
        """The Qwen3 text encoder as `Qwen3ForCausalLM`: the same weights the pipeline encodes with."""
        if self.remote_text:
            raise ValueError(f"this needs the Qwen3 text encoder, which this instance does not load (it encodes "
                             f"at {self.remote_text.shown}): use that instance, or another backend.")
        with self._lock:  # never None, even if an unload runs concurrently
            pipe = self.pipeline()
            if self._lm is None:
                self._load_text_encoder(pipe)
            return self._lm

    @property
    def text_encoder_loaded(self) -> bool:
        return self._lm is not None

    def _zimage_folder(self) -> str:
        source = self.zimage_source
        if _is_local(source) and not os.path.isdir(os.path.expanduser(source)):
            raise _load_error("Z-Image checkpoint", source, FileNotFoundError("no such folder"),
                              ZIMAGE_REPO, "--model-path", self.policy.hosted)
        return os.path.expanduser(source)

    def _load_zimage(self) -> None:
        from diffusers import ZImagePipeline

        source = self._zimage_folder()
        dit_device = resolve_device(self.settings.transformer_device, not self.settings.zero_gpu)
        vae_device = resolve_device(self.settings.vae_device, not self.settings.zero_gpu)
        dtypes = {
            "transformer": resolve_dtype(self.settings.dtype, dit_device),
            "vae": resolve_dtype(self.settings.dtype, vae_device),
            "default": torch.float32,
        }
        try:
            pipe = ZImagePipeline.from_pretrained(source, text_encoder=None, dtype=dtypes, use_safetensors=True)
        except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
            raise _load_error("Z-Image checkpoint", source, err, ZIMAGE_REPO, "--model-path",
                              self.policy.hosted) from err
        pipe.transformer.to(dit_device).eval()
        pipe.vae.to(vae_device).eval()
        self._views = self._make_views(pipe)
        self._pipe = pipe
        self.load_counts["zimage"] += 1

    def _load_text_encoder(self, pipe) -> None:
        from transformers import Qwen3ForCausalLM

        source = self._zimage_folder()
        te_device = resolve_device(self.settings.text_encoder_device, not self.settings.zero_gpu)
        try:
            lm = Qwen3ForCausalLM.from_pretrained(
                source, subfolder="text_encoder", dtype=resolve_dtype(self.settings.dtype, te_device),
                use_safetensors=True,
            )
        except Exception as err:  # noqa: BLE001
            raise _load_error("Z-Image text encoder", source, err, ZIMAGE_REPO, "--model-path",
                              self.policy.hosted) from err
        lm.to(te_device).eval()
        pipe.register_modules(text_encoder=lm.model)
        self._lm = lm
        self.load_counts["text_encoder"] += 1

    @contextmanager
    def vl_session(self, timeline=None):
        """A span of VL work (e.g. every extraction of one request). The model loads on first
        use inside it (`vl_model`); with `vl_auto_unload` it is released when the outermost
        session ends, after the callers' references are gone. One user at a time, so an unload
        never hits a running extraction."""
        with self._vl_lock:
            self._vl_depth += 1
            try:
                yield
            finally:
                self._vl_depth -= 1
                if self._vl_depth == 0 and self.settings.vl_auto_unload and self._vl is not None:
                    with timeline.stage("offload") if timeline else nullcontext():
                        self.unload_vl()

    @contextmanager
    def vl_model(self):
        """(Qwen3-VL model, processor), loaded if needed, inside a `vl_session`."""
        if self.remote_vl:
            raise ValueError(f"this needs the Qwen3-VL model, which this instance does not load (it extracts "
                             f"at {self.remote_vl.shown}): use that instance, or another backend.")
        with self.vl_session():
            if self._vl is None:
                self._load_vl()
            yield self._vl

    def text_encoder_config(self):
        """The text encoder's config as the Z-Image checkpoint declares it (no weights loaded)."""
        if self._text_config is None:
            from transformers import AutoConfig

            source = os.path.expanduser(self.zimage_source)
            try:
                self._text_config = AutoConfig.from_pretrained(source, subfolder="text_encoder")
            except Exception as err:  # noqa: BLE001
                raise _load_error("Z-Image checkpoint", source, err, ZIMAGE_REPO, "--model-path",
                                  self.policy.hosted) from err
        return self._text_config

    def vl_config(self):
        """The VL model's config, read from its folder without loading weights (for early checks)."""
        if self._vl is not None:
            return self._vl[0].config
        if self._vl_config is None:
            from transformers import AutoConfig

            try:
                self._vl_config = AutoConfig.from_pretrained(os.path.expanduser(self.vl_source))
            except Exception as err:  # noqa: BLE001
                raise _load_error("Qwen3-VL model", self.vl_source, err, VL_REPO, "--vl-model-path", self.policy.hosted) from err
        return self._vl_config

    @property
    def vl_loaded(self) -> bool:
        return self._vl is not None

    def unload_vl(self) -> None:
        """Drop the VL model and return its memory (CPU and GPU)."""
        with self._vl_lock:
            if self._vl is None:
                return
            self._vl = None
            release_memory()  # the model is referenced nowhere else now: its memory goes back

    def preload(self) -> None:
        """Load every model now (ZeroGPU: at start-up, on cuda, kept for the app's lifetime)."""
        if self.remote_text:
            self.pipeline()
        else:
            self.language_model()
        if not self.remote_vl:
            with self.vl_model():
                pass

    def unload(self) -> None:
        """Release every model. A running generation finishes first (it holds the generation
        lock), so unloading never breaks a job; the next request loads again."""
        with self.generation_lock, self._lock:
            self._pipe, self._lm, self._views = None, None, {}
        self.unload_vl()
        release_memory()

    def clear_caches(self) -> None:
        self.vl_cache.clear()
        self.text_cache.clear()
        self._reference_stats.clear()

    def status(self) -> dict:
        """What the status panel shows: models and their memory, caches, the last timeline."""
        status = {"models": self.memory_report(),
                  "vl_cache": self.vl_cache.stats(), "text_cache": self.text_cache.stats(),
                  "last_timeline": self.last_timeline, "load_counts": dict(self.load_counts)}
        if torch.cuda.is_available():
            status["cuda"] = {"allocated_bytes": torch.cuda.memory_allocated(),
                              "reserved_bytes": torch.cuda.memory_reserved()}
        return status

    def _load_vl(self) -> None:
        from transformers import Qwen3VLForConditionalGeneration

        from .vl import ImageOnlyProcessor

        source = self.vl_source
        if _is_local(source) and not os.path.isdir(os.path.expanduser(source)):
            raise _load_error("Qwen3-VL model", source, FileNotFoundError("no such folder"), VL_REPO,
                              "--vl-model-path", self.policy.hosted)
        source = os.path.expanduser(source)
        device = resolve_device(self.settings.vl_device, not self.settings.zero_gpu)
        try:
            processor = ImageOnlyProcessor.from_pretrained(source)
            model = Qwen3VLForConditionalGeneration.from_pretrained(
                source, dtype=resolve_dtype(self.settings.dtype, device), use_safetensors=True)
        except Exception as err:  # noqa: BLE001
            raise _load_error("Qwen3-VL model", source, err, VL_REPO, "--vl-model-path", self.policy.hosted) from err
        self._vl = (model.to(device).eval(), processor)
        self.load_counts["vl"] += 1

    def scorer(self):
        """The `--metrics-model` scorer (CLIP or SigLIP), loaded on first use; None when unset."""
        if not self.settings.metrics_model:
            return None
        with self._lock:
            if self._scorer is None:
                from .scores import Scorer

                self._scorer = Scorer(self.settings.metrics_model)
                self.load_counts["metrics"] += 1
            return self._scorer

    def reference_stats(self, layer: int):
        """The text encoder's per-dim statistics at `layer`, computed once per model and layer."""
        key = (self.text_encoder_id, layer)
        if key not in self._reference_stats:
            from .encode import caption_limit
            from .remote import reference_stats as remote_stats
            from .vl import reference_stats

            pipe = self.pipeline()
            if self.remote_text:
                self._reference_stats[key] = remote_stats(self.remote_text, layer, caption_limit(pipe.transformer),
                                                          self.text_encoder_config())
            else:
                self._reference_stats[key] = reference_stats(self.language_model().model, pipe.tokenizer, layer)
        return self._reference_stats[key]

    # ---- pipeline views ----------------------------------------------------------------------
    def view(self, mode: str, scheduler):
        """The txt2img or img2img pipeline with `scheduler` installed, for one call.

        Both views are made once with diffusers' `from_pipe` and share the loaded DiT; they have
        no text encoder or VAE (we pass embeddings and encode/decode ourselves, so each part may
        live on its own device). Call it under `generation_lock`: the scheduler is per call.
        """
        self.pipeline()
        view = self._views[mode]
        view.scheduler = scheduler
        return view

    def _make_views(self, pipe) -> dict:
        from diffusers import ZImageImg2ImgPipeline, ZImagePipeline
        from diffusers.image_processor import VaeImageProcessor

        views = {}
        for mode, cls in (("txt2img", ZImagePipeline), ("img2img", ZImageImg2ImgPipeline)):
            # from_pipe casts to `dtype` (float32 unless told): pass the DiT's own dtype.
            view = cls.from_pipe(pipe, vae=None, text_encoder=None, tokenizer=None,
                                 dtype=pipe.transformer.dtype)
            view.vae_scale_factor = pipe.vae_scale_factor
            # img2img gets VAE latents as `image`; the processor must know their channel count.
            view.image_processor = VaeImageProcessor(
                vae_scale_factor=pipe.vae_scale_factor * 2,
                vae_latent_channels=pipe.transformer.config.in_channels,
            )
            view.set_progress_bar_config(desc=mode)
            views[mode] = view
        return views

    # ---- report ------------------------------------------------------------------------------
    def memory_report(self) -> list[dict]:
        """What is loaded, on which device, in which dtype, and how many bytes each part holds."""
        parts = {}
        if self._pipe is not None:
            parts = {"text_encoder": self._lm, "transformer": self._pipe.transformer, "vae": self._pipe.vae}
            parts = {name: module for name, module in parts.items() if module is not None}
        vl = self._vl
        if vl is not None:
            parts["vl"] = vl[0]
        report = []
        for name, module in parts.items():
            param = next(module.parameters())
            report.append({
                "component": name,
                "class": type(module).__name__,
                "device": str(param.device),
                "dtype": str(param.dtype).replace("torch.", ""),
                "bytes": module_bytes(module),
            })
        return report

"""The model manager: loads each model lazily on first use, once, under a lock.

The page is served before anything loads. The Qwen3 text encoder is loaded once as
`Qwen3ForCausalLM` (its tied head restores the LM head the Z-Image repo leaves out), so the same
weights serve embedding extraction (`lm.model`, passed to the pipeline) and text generation.
The txt2img and img2img pipelines that run are views built from the loaded modules: they share
the one loaded DiT.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from contextlib import contextmanager, nullcontext

import torch

from . import checkpoints, download, levers

from ..serving import policy
from .cache import LRUCache
from ..core.devices import ModelLoadError, input_device, module_bytes, release_memory, resolve_device, resolve_dtype  # noqa: F401 - re-exported
from .download import load_error
from .memory import Plan
from .placement import Placement
from .settings import VL_REPO, ZIMAGE_REPO, Settings


class ModelManager(Placement):
    """Owns every model of the app. Thread-safe; nothing is loaded until asked for. Where the
    models go (the memory plan, its levers, parking) lives in `Placement`."""

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
        self.load_problem: str | None = None  # the last load's ModelLoadError; None after a load succeeds
        self._vl_lock = threading.RLock()
        self._vl = None  # (Qwen3VLForConditionalGeneration, processor) while loaded
        self._vl_depth = 0  # nesting of vl_session()
        self._vl_config = None
        self._text_config = None
        self._checkpoint_info: dict | None = None
        self._adopted: dict = {}  # models built elsewhere (`adopt`), placed instead of loaded
        self._controlnet = None  # ZImageControlNetModel (--controlnet-path), loaded on first use
        self._reference_stats: dict = {}
        self._plan: Plan | None = None
        self._offload_hooks: list = []
        self._parked: list = []  # models moved to the CPU while the VL model uses the GPU
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

    @classmethod
    def adopt(cls, settings: Settings, pipeline, language_model=None, vl=None, label: str = "adopted"):
        """A manager over models already built (e.g. random weights made on a GPU, which a 30 GB
        round trip through disk would not fit a short loan): `pipeline` a `ZImagePipeline` with its
        tokenizer, `language_model` the text encoder as `Qwen3ForCausalLM`, `vl` (Qwen3-VL model,
        processor). They are placed by the memory plan as loaded ones are (devices, offload, tiling),
        lazily as ever, and metadata names them `label`. `settings` still name the checkpoints'
        folders, for the plan's metadata (configs and indexes, no weights needed). An unload keeps
        them (there is nothing to load them back from); a plan that quantizes cannot adopt them
        (quantization happens as weights load)."""
        manager = cls(settings)
        quantized = {k: v for k, v in manager.memory_plan().placement.quantize.items() if v != "none"}
        if quantized:
            raise ValueError(f"the plan quantizes {quantized}: adopted models are not quantized; set "
                             f"quantize_transformer/text_encoder/vl='none' (or a larger memory_budget).")
        manager._adopted = {"pipeline": pipeline, "language_model": language_model, "vl": vl, "label": label}
        return manager

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
        if self._adopted:
            return self._adopted["label"]
        return "tiny-random-zimage" if self.settings.tiny else self.policy.public_name(self.settings.model_path)

    @property
    def controlnet_id(self) -> str:
        """How metadata names the ControlNet: its hub id, or its file or folder name."""
        from pathlib import Path

        path = self.settings.controlnet_path
        return path if path.count("/") == 1 and not Path(path).exists() else Path(path).name

    @property
    def vl_model_id(self) -> str:
        if self.remote_vl:
            return self.remote_vl.shown
        if self._adopted.get("vl"):
            return self._adopted["label"]
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
            with self._lock, self._recording():
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
                with self._recording():
                    self._load_text_encoder(pipe)
            return self._lm

    @property
    def text_encoder_loaded(self) -> bool:
        return self._lm is not None

    @contextmanager
    def _recording(self):
        """Keep a load's failure for the page (`load_problem`) until a load succeeds."""
        try:
            yield
        except ModelLoadError as err:
            self.load_problem = str(err)
            raise
        self.load_problem = None

    def _zimage_folder(self) -> str:
        return self._folder(self.zimage_source, "Z-Image checkpoint", ZIMAGE_REPO, "--model-path",
                            download.ZIMAGE_FILES)

    def _vl_folder(self) -> str:
        return self._folder(self.vl_source, "Qwen3-VL model", VL_REPO, "--vl-model-path", download.VL_FILES)

    def _folder(self, source: str, what: str, repo: str, flag: str, patterns) -> str:
        """The local folder of a checkpoint: the folder given, or the cached snapshot of a hub id,
        downloaded on first use (`llm_dit.runtime.download`: it fails within hub_timeout when the hub is mute)."""
        return download.local_folder(source, what, repo, flag, patterns, self.settings.hub_timeout,
                                     self.policy.hosted)

    def _load_zimage(self) -> None:
        """The DiT, VAE, tokenizer and scheduler. The text encoder loads here only when it joins an
        offload chain (it runs first); otherwise on first use (`language_model`), so a pure-VL
        generation never loads it."""
        from diffusers import PipelineQuantizationConfig, ZImagePipeline

        source = self._zimage_folder()
        placement = self.memory_plan().placement
        dit_device = self._device(self.settings.transformer_device, True)
        vae_device = self._device(self.settings.vae_device, True)
        dtypes = {
            "transformer": resolve_dtype(self.settings.dtype, dit_device),
            "vae": resolve_dtype(self.settings.dtype, vae_device),
            "default": torch.float32,
        }
        dit_quant = self._quantization("transformer", "diffusers", dit_device, dtypes["transformer"])
        parts = {}
        if self.settings.transformer_file:  # quantized (or not) as it loads: no pipeline-level config
            parts["transformer"] = self._transformer_file(source, dtypes["transformer"], dit_quant)
            dit_quant = None
        try:
            pipe = self._adopted["pipeline"] if self._adopted else ZImagePipeline.from_pretrained(
                source, text_encoder=None, dtype=dtypes, use_safetensors=True, **parts,
                quantization_config=PipelineQuantizationConfig(quant_mapping={"transformer": dit_quant})
                if dit_quant else None,
            )
        except Exception as err:  # noqa: BLE001 - every failure becomes one clear message
            raise load_error("Z-Image checkpoint", source, err, ZIMAGE_REPO, "--model-path",
                              self.policy.hosted) from err
        pipe.transformer.eval(), pipe.vae.eval()
        lm = None
        if placement.offload != "none" and not self.remote_text:
            lm = self._text_encoder_model(source)
        # Model offload hooks the encoder itself (the pipeline calls `lm.model`); the finer modes hook
        # every layer of `lm`, so its tied LM head (used by rewriting) moves along.
        offloaded = {}
        if placement.offload != "none":
            if lm is not None and self._text_encoder_device() == dit_device:
                offloaded["text_encoder"] = lm.model if placement.offload == "model" else lm
            offloaded["transformer"] = pipe.transformer
            self._offload_hooks = levers.apply_offload(placement.offload, offloaded, dit_device)
        if lm is not None:
            self._attach_text_encoder(pipe, lm, placed="text_encoder" in offloaded)
        if "transformer" not in offloaded:
            pipe.transformer.to(dit_device)
        pipe.vae.to(vae_device)
        if self.settings.vae_tiling == "on" or placement.vae_tiling:
            levers.set_vae_tiling(pipe.vae, True)
        if self.settings.compile:
            levers.compile_dit(pipe.transformer)
        self._views = self._make_views(pipe)
        self._pipe = pipe
        self.load_counts["zimage"] += 1

    def _transformer_file(self, source: str, dtype, quantization):
        """The DiT from `--transformer-file` (single file or GGUF), with `source`'s transformer config."""
        path = self.settings.transformer_file
        try:
            return checkpoints.load_transformer(path, source, dtype, quantization).eval()
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(
                f"Could not load the transformer file {path!r} ({type(err).__name__}: {err}). Give a Z-Image "
                f"transformer as one .safetensors (ComfyUI/official key layout) or .gguf file, matching the "
                f"architecture of --model-path (its transformer/config.json), or leave --transformer-file empty."
            ) from err

    def controlnet_view(self, scheduler):
        """The `ZImageControlNetPipeline` view (the loaded DiT and VAE, the ControlNet of
        `--controlnet-path`, loaded on first use and sharing the DiT's embedders and refiners as
        diffusers' pipeline makes it), with `scheduler` installed. Call under `generation_lock`."""
        if not self.settings.controlnet_path:
            raise ValueError("control_image: this instance has no ControlNet: start it with --controlnet-path (e.g. "
                             "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union), or leave the control image empty.")
        with self._lock:
            pipe = self.pipeline()
            if "controlnet" not in self._views:
                with self._recording():
                    self._load_controlnet(pipe)
            view = self._views["controlnet"]
        view.scheduler = scheduler
        return view

    def inpaint_view(self, scheduler):
        """The `ZImageInpaintPipeline` view (the loaded DiT and VAE: it encodes the init image and
        mask itself), with `scheduler` installed. Call under `generation_lock`."""
        from diffusers import ZImageInpaintPipeline

        with self._lock:
            pipe = self.pipeline()
            if "inpaint" not in self._views:
                view = ZImageInpaintPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None,
                                             tokenizer=None, transformer=pipe.transformer)
                view.set_progress_bar_config(desc="inpaint")
                self._views["inpaint"] = view
            view = self._views["inpaint"]
        view.scheduler = scheduler
        return view

    def controlnet_inpaint_view(self, scheduler):
        """The `ZImageControlNetInpaintPipeline` view (the ControlNet view's models: it reads the
        control map, the mask and the masked init image as one control input, which only a
        ControlNet trained for it takes), with `scheduler` installed. Call under `generation_lock`."""
        from diffusers import ZImageControlNetInpaintPipeline

        base = self.controlnet_view(scheduler)
        with self._lock:
            if "controlnet_inpaint" not in self._views:
                try:
                    view = ZImageControlNetInpaintPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=None,
                                                           tokenizer=None, transformer=base.transformer,
                                                           controlnet=base.controlnet)
                except ValueError:
                    raise ValueError(f"control_image with mask_image: the ControlNet {self.controlnet_id!r} takes no "
                                     f"mask (its control input is the map alone): use an inpainting union ControlNet "
                                     f"(alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.0 or later), or leave the "
                                     f"control image or the mask empty.") from None
                view.set_progress_bar_config(desc="controlnet inpaint")
                self._views["controlnet_inpaint"] = view
            view = self._views["controlnet_inpaint"]
        view.scheduler = scheduler
        return view

    def _load_controlnet(self, pipe) -> None:
        from diffusers import ZImageControlNetModel, ZImageControlNetPipeline

        path = self.settings.controlnet_path
        dit = pipe.transformer
        dtype = next(p.dtype for p in dit.parameters() if p.dtype.is_floating_point)
        try:
            if path.lower().endswith(".safetensors"):
                model = ZImageControlNetModel.from_single_file(path, torch_dtype=dtype)
            else:
                model = ZImageControlNetModel.from_pretrained(path, torch_dtype=dtype, use_safetensors=True)
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(
                f"Could not load the ControlNet {path!r} ({type(err).__name__}: {err}). Give a Z-Image ControlNet: "
                f"a hub id or folder in diffusers' layout, or its single .safetensors file (a single file reads its "
                f"config from the hub on first use), or leave --controlnet-path empty."
            ) from err
        view = ZImageControlNetPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None, tokenizer=None,
                                        transformer=dit, controlnet=model.to(input_device(dit)).eval())
        view.set_progress_bar_config(desc="controlnet")
        self._controlnet = view.controlnet
        self._views["controlnet"] = view
        self.load_counts["controlnet"] += 1

    @property
    def variant(self) -> str:
        """'turbo' or 'base': `--model-variant`, else read from the checkpoint's configs or name."""
        from .memory import metadata_folder

        return checkpoints.detect_variant(self.zimage_source, self.settings.model_variant,
                                          metadata_folder(self.zimage_source))

    def request_defaults(self) -> dict:
        """The request defaults that differ for this checkpoint: its variant's (Base: CFG, negative
        prompt, steps) and its scheduler config's shift. Read from names and configs, nothing loads."""
        from ..core.variants import variant_defaults
        from .memory import metadata_folder

        folder = metadata_folder(self.zimage_source)  # None: a hub id not downloaded yet
        config = folder / "scheduler" / "scheduler_config.json" if folder else None
        shift = json.loads(config.read_text()).get("shift") if config and config.is_file() else None
        return variant_defaults(self.variant, shift)

    def checkpoint_info(self) -> dict:
        """What metadata records about the checkpoint: its variant and, for a transformer file, the
        file's name, hash and quantization (computed once)."""
        if self._checkpoint_info is None:
            info = {"variant": self.variant}
            if self.settings.transformer_file:
                info.update(checkpoints.describe(self.settings.transformer_file))
            self._checkpoint_info = info
        return self._checkpoint_info

    def _text_encoder_model(self, source: str):
        from transformers import Qwen3ForCausalLM

        if self._adopted.get("language_model") is not None:
            return self._adopted["language_model"].eval()
        device = self._text_encoder_device()
        dtype = resolve_dtype(self.settings.dtype, device)
        quant = self._quantization("text_encoder", "transformers", device, dtype)
        try:
            return Qwen3ForCausalLM.from_pretrained(source, subfolder="text_encoder", dtype=dtype,
                                                    use_safetensors=True, quantization_config=quant).eval()
        except Exception as err:  # noqa: BLE001
            raise load_error("Z-Image text encoder", source, err, ZIMAGE_REPO, "--model-path",
                              self.policy.hosted) from err

    def _attach_text_encoder(self, pipe, lm, placed: bool) -> None:
        if not placed:
            lm.to(self._text_encoder_device())
        pipe.register_modules(text_encoder=lm.model)
        self._lm = lm
        self.load_counts["text_encoder"] += 1

    def _load_text_encoder(self, pipe) -> None:
        """First use of the text encoder (no offload chain to join)."""
        self._attach_text_encoder(pipe, self._text_encoder_model(self._zimage_folder()), placed=False)

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
                if self._vl_depth == 0:
                    self._unpark()

    @contextmanager
    def vl_model(self):
        """(Qwen3-VL model, processor), loaded if needed, inside a `vl_session`."""
        if self.remote_vl:
            raise ValueError(f"this needs the Qwen3-VL model, which this instance does not load (it extracts "
                             f"at {self.remote_vl.shown}): use that instance, or another backend.")
        with self.vl_session():
            if self._vl is None:
                self._park()
                with self._recording():
                    self._load_vl()
            yield self._vl

    def text_encoder_config(self):
        """The text encoder's config as the Z-Image checkpoint declares it (no weights loaded)."""
        if self._text_config is None:
            from transformers import AutoConfig

            source = self._zimage_folder()
            try:
                self._text_config = AutoConfig.from_pretrained(source, subfolder="text_encoder")
            except Exception as err:  # noqa: BLE001
                raise load_error("Z-Image checkpoint", source, err, ZIMAGE_REPO, "--model-path",
                                  self.policy.hosted) from err
        return self._text_config

    def vl_config(self):
        """The VL model's config, read from its folder without loading weights (for early checks)."""
        if self._vl is not None:
            return self._vl[0].config
        if self._vl_config is None:
            from transformers import AutoConfig

            with self._recording():
                source = self._vl_folder()
            try:
                self._vl_config = AutoConfig.from_pretrained(source)
            except Exception as err:  # noqa: BLE001
                raise load_error("Qwen3-VL model", self.vl_source, err, VL_REPO, "--vl-model-path", self.policy.hosted) from err
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
            self._pipe, self._lm, self._views, self._offload_hooks = None, None, {}, []
            self._controlnet = None
        self.unload_vl()
        release_memory()

    def clear_caches(self) -> None:
        self.vl_cache.clear()
        self.text_cache.clear()
        self._reference_stats.clear()

    def status(self) -> dict:
        """What the status panel shows: models and their memory, caches, the last timeline."""
        status = {"models": self.memory_report(), "plan": self.memory_plan().lines(), "levers": self.memory_levers(),
                  "vl_cache": self.vl_cache.stats(), "text_cache": self.text_cache.stats(),
                  "last_timeline": self.last_timeline, "load_counts": dict(self.load_counts)}
        if torch.cuda.is_available():
            status["cuda"] = {"allocated_bytes": torch.cuda.memory_allocated(),
                              "reserved_bytes": torch.cuda.memory_reserved()}
        return status

    def _load_vl(self) -> None:
        from transformers import Qwen3VLForConditionalGeneration

        from ..conditioning.vl import ImageOnlyProcessor

        source = self._vl_folder()
        device = self._device(self.settings.vl_device, self.memory_plan().placement.vl != "cpu")
        dtype = resolve_dtype(self.settings.dtype, device)
        quantization = self._quantization("vl", "transformers", device, dtype)
        try:
            model, processor = self._adopted.get("vl") or (Qwen3VLForConditionalGeneration.from_pretrained(
                source, dtype=dtype, use_safetensors=True, quantization_config=quantization),
                ImageOnlyProcessor.from_pretrained(source))
        except Exception as err:  # noqa: BLE001
            raise load_error("Qwen3-VL model", source, err, VL_REPO, "--vl-model-path", self.policy.hosted) from err
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
            from ..core.encode import caption_limit
            from .remote import reference_stats as remote_stats
            from ..conditioning.vl import reference_stats

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

        Both views are made once from the loaded modules and share the loaded DiT; they have
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
            # Built from the loaded modules as `from_pipe` does, without its final cast to a dtype
            # (which a quantized DiT refuses, and which would touch offloaded weights).
            view = cls(scheduler=pipe.scheduler, vae=None, text_encoder=None, tokenizer=None,
                       transformer=pipe.transformer)
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
        if self._controlnet is not None:  # its own blocks (the embedders and refiners are the DiT's)
            parts["controlnet"] = torch.nn.ModuleList(m for n, m in self._controlnet.named_children()
                                                      if n.startswith("control_") and m is not None)
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

"""Where the models go: the memory plan and its levers, applied by the model manager.

`Placement` is the part of `ModelManager` that reads the plan (`llm_dit.runtime.memory`, computed from the
checkpoints' metadata before anything loads) and turns it into devices, quantization configs,
VAE tiling and the parking of the DiT and text encoder while the VL model uses the GPU. It uses
the manager's settings, sources, locks and loaded models.
"""

from __future__ import annotations

import torch

from . import levers
from ..core.devices import ModelLoadError, release_memory, resolve_device
from .memory import Plan, plan_for


class Placement:
    def memory_plan(self) -> Plan:
        """Where each model goes and which levers it needs, from checkpoint metadata (loads nothing)."""
        if self._plan is None:
            with self._lock:
                if self._plan is None:
                    self._plan = plan_for(self.settings, self.zimage_source, self.vl_source)
        return self._plan

    def _device(self, setting: str, placed: bool) -> torch.device:
        """An explicit device setting wins; else the plan's device when `placed`, else the CPU."""
        check = not self.settings.zero_gpu
        if setting != "auto":
            return resolve_device(setting, check)
        return resolve_device(self.memory_plan().device if placed else "cpu", check)

    def _quantization(self, component: str, library: str, device: torch.device, dtype: torch.dtype):
        kind = self.memory_plan().placement.quantize[component]
        try:
            return levers.quantization_config(kind, library, device, dtype)
        except ValueError as err:
            raise ModelLoadError(f"quantize_{component}={kind}: {err}") from None

    def memory_levers(self) -> dict:
        """The levers in force (for the Status tab and the images' metadata)."""
        placement = self.memory_plan().placement
        return {"plan": self.memory_plan().name, "offload": placement.offload,
                "quantize": {k: v for k, v in placement.quantize.items() if v != "none"},
                "vae_tiling": {"on": "on", "off": "off"}.get(self.settings.vae_tiling,
                                                             "on" if placement.vae_tiling else
                                                             f"above {self.settings.vae_tiling_pixels:,} px"),
                "compile": self.settings.compile, "vl": placement.vl}

    def apply_vae_tiling(self, height: int, width: int) -> bool:
        """Tile the VAE for this size (auto: above the pixel threshold); call under generation_lock."""
        mode = self.settings.vae_tiling
        on = mode == "on" or (mode == "auto" and (self.memory_plan().placement.vae_tiling or
                                                  height * width > self.settings.vae_tiling_pixels))
        levers.set_vae_tiling(self.pipeline().vae, on)
        return on

    def _text_encoder_device(self) -> torch.device:
        return self._device(self.settings.text_encoder_device, self.memory_plan().placement.text_encoder_on_gpu)

    def _park(self) -> None:
        """Free the GPU for the VL model. Plan "gpu-park": move the text encoder and DiT to the CPU;
        generations wait meanwhile (the generation lock is held until `_unpark`). Model offload:
        send back whichever model its hooks left on the GPU."""
        placement = self.memory_plan().placement
        if self._pipe is None or placement.vl not in ("gpu", "gpu-park"):
            return
        if self._offload_hooks:  # model offload: the last model used goes back; hooks bring it again
            for hook in self._offload_hooks:
                hook.offload()
            return
        if placement.vl != "gpu-park" or placement.offload != "none" or self._parked:
            return  # group / sequential offload keep the models on the CPU between uses anyway
        self.generation_lock.acquire()
        for module in (self._lm, self._pipe.transformer):
            if module is not None:  # (no local text encoder when a remote one encodes)
                self._parked.append((module, next(module.parameters()).device))
                module.to("cpu")
        release_memory()

    def _unpark(self) -> None:
        if not self._parked:
            return
        for module, device in self._parked:
            module.to(device)
        self._parked = []
        self.generation_lock.release()

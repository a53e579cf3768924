"""The memory levers, applied to loaded models with the libraries' own tools.

Quantization goes through diffusers' and transformers' quantization configs (torchao for int8 and
fp8 weight-only, bitsandbytes for nf4); offload through accelerate's hooks and diffusers' group
offloading; VAE tiling and slicing through the VAE's own switches; compilation through diffusers'
regional compilation of the DiT's repeated blocks. Which lever to pull is decided by the
placement plan (`llm_dit.runtime.memory`) and the settings.
"""

from __future__ import annotations

import importlib.util

import torch

TORCHAO_PIN = "torchao==0.18.0"


def quantization_config(kind: str, library: str, device: torch.device, compute_dtype: torch.dtype):
    """A diffusers or transformers quantization config for `kind` (None for "none").

    Raises ValueError naming the missing package or unsupported hardware."""
    if kind == "none":
        return None
    lib = importlib.import_module(library)
    if kind in ("int8", "fp8"):
        if importlib.util.find_spec("torchao") is None:
            raise ValueError(f"quantization {kind} needs torchao: pip install {TORCHAO_PIN}")
        if kind == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            raise ValueError(f"quantization fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper); "
                             f"{torch.cuda.get_device_name(device)} has "
                             f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}: use int8.")
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

        return lib.TorchAoConfig(Int8WeightOnlyConfig() if kind == "int8" else Float8WeightOnlyConfig())
    if kind == "nf4":
        if device.type != "cuda":  # diffusers' bitsandbytes quantizer refuses to load without one
            raise ValueError(f"quantization nf4 (bitsandbytes) needs a CUDA GPU, not {device}: use int8 instead.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("quantization nf4 needs bitsandbytes: pip install bitsandbytes (or use int8).")
        return lib.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=compute_dtype)
    raise ValueError(f"quantization={kind!r} is unknown: use none, int8, fp8 or nf4.")


def apply_offload(mode: str, modules: dict[str, torch.nn.Module], device: torch.device) -> list:
    """Offload `modules` (name -> module, in the order they run) to the CPU, onloading to `device`.

    model: a whole model moves to `device` when it runs and the previous one goes back (accelerate);
    group: the DiT's blocks move one group at a time, prefetched on a CUDA stream where there is one
    (diffusers); other models move layer by layer (leaf level); sequential: every layer moves when it
    runs (accelerate). Returns the model-offload hooks (to park the models later)."""
    hooks = []
    if mode == "model":
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in modules.values():
            module.to("cpu")
            _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
            hooks.append(hook)
    elif mode == "group":
        from diffusers.hooks import apply_group_offloading

        stream = device.type == "cuda"
        for name, module in modules.items():
            module.to("cpu")
            level = "block_level" if name == "transformer" else "leaf_level"
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type=level, num_blocks_per_group=1 if level == "block_level" else None,
                                   use_stream=stream)
    elif mode == "sequential":
        from accelerate import cpu_offload

        for module in modules.values():
            cpu_offload(module, execution_device=device)
    elif mode != "none":
        raise ValueError(f"offload={mode!r} is unknown: use none, model, group or sequential.")
    return hooks


def set_vae_tiling(vae, on: bool) -> None:
    """Tiled (and sliced) VAE decode and encode, or whole-image ones."""
    if on:
        vae.enable_tiling()
        vae.enable_slicing()
    else:
        vae.disable_tiling()
        vae.disable_slicing()


def compile_dit(transformer) -> None:
    """Regional compilation: each repeated block compiles once and is reused (fast warm-up)."""
    transformer.compile_repeated_blocks()

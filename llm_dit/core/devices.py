"""Devices, dtypes and memory accounting shared by the model manager and the benchmark."""

from __future__ import annotations

import ctypes
import gc

import torch


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
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ModelLoadError(f"device {name!r} was asked for, but torch sees {count} CUDA GPU(s): "
                                 f"use --*-device cpu, auto{', or cuda:0 to cuda:' + str(count - 1) if count else ''}.")
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
    """Bytes held by a module's parameters and buffers, counting shared (tied) tensors once
    (quantized weights count their int8/fp8 data and scales)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def input_device(module: torch.nn.Module) -> torch.device:
    """Where to put a module's inputs: its weights' device, or the CPU while they are offloaded
    (sequential offload leaves them on the meta device; its hooks move the inputs themselves)."""
    device = next(module.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds; quantized tensor subclasses (torchao) count their inner tensors."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, n)) for n in names)
    return tensor.untyped_storage().nbytes()

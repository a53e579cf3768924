"""Attention backends: the ones diffusers knows that can actually run on this machine."""

from __future__ import annotations

import torch

CPU_BACKENDS = ("native", "_native_math")  # PyTorch SDPA: runs everywhere
CUDA_NATIVE = ("_native_efficient", "_native_flash", "_native_cudnn", "flex")
KERNEL_PACKAGES = ("flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "sage", "sage_varlen", "xformers")


def _usable(name: str) -> bool:
    """diffusers' own requirement check (packages and versions) for one backend."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except (RuntimeError, ValueError, ImportError):
        return False
    return True


def attention_backends(hosted: bool = False) -> list[str]:
    """Backends a request may choose here. Hub-kernel backends (`*_hub`, which download kernels
    at run time) are offered only locally, and only where diffusers' check passes."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    names = list(CPU_BACKENDS)
    if torch.cuda.is_available():
        names += [n for n in CUDA_NATIVE + KERNEL_PACKAGES if _usable(n)]
        if not hosted:
            names += [b.value for b in AttentionBackendName if b.value.endswith("_hub") and _usable(b.value)]
    return names

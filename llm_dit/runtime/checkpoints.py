"""Checkpoint formats people already hold: a single-file DiT (safetensors, ComfyUI/official key
layout; bf16, fp16 or fp8 e4m3fn) or a GGUF DiT (Q8_0, Q4_K, ...), and which Z-Image variant a
checkpoint is (Turbo, distilled; Base, non-distilled).

diffusers does the loading (`ZImageTransformer2DModel.from_single_file` and its key conversion;
`GGUFQuantizationConfig` for GGUF); this module says which path a file takes, what it holds
(its quantization, from the header only) and how to name it in metadata (file name, size and a
hash). The rest of the pipeline (text encoder, VAE, tokenizer, scheduler) and the DiT's config
come from the Z-Image folder or hub id (`--model-path`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path

FORMATS = {".safetensors": "single_file", ".sft": "single_file", ".gguf": "gguf"}
FULL_HASH_BYTES = 1 << 30  # files up to 1 GiB get a full sha256; bigger ones size + header hash
HEADER_HASH_BYTES = 16 << 20


def file_format(path: str) -> str:
    """'single_file' or 'gguf' from the file name; a clear error for anything else."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(f"transformer_file={path!r} is neither a .safetensors nor a .gguf file: give a single-file "
                         f"Z-Image transformer (ComfyUI/official layout) or a GGUF transformer.")
    return kind


def load_transformer(path: str, config_folder: str, dtype, quantization=None):
    """The Z-Image DiT from a single file (`path`), with the config of `config_folder/transformer`.

    Single files go through diffusers' own key conversion; fp8 files are upcast to `dtype` at
    load (or quantized by `quantization`, the --quantize-transformer lever's diffusers config). GGUF
    files stay as they are quantized and compute in `dtype` (diffusers' GGUF linear layers)."""
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    quant = GGUFQuantizationConfig(compute_dtype=dtype) if file_format(path) == "gguf" else quantization
    return ZImageTransformer2DModel.from_single_file(path, config=config_folder, subfolder="transformer",
                                                     torch_dtype=dtype, quantization_config=quant)


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def quantization(path: str) -> str:
    """What most of the file's bytes are stored as, read from its header (e.g. 'Q8_0', 'Q4_K',
    'F8_E4M3', 'BF16'); norms and biases kept in F32 beside quantized weights do not count."""
    file = Path(path)
    types = Counter()
    if file_format(path) == "gguf":
        from gguf import GGUFReader

        for t in GGUFReader(file).tensors:
            types[t.tensor_type.name] += int(t.n_bytes)
    else:
        for t in _safetensors_header(file).values():
            types[t["dtype"]] += t["data_offsets"][1] - t["data_offsets"][0]
    return types.most_common(1)[0][0]


def weights_bytes(path: str) -> int:
    """Bytes of the file's tensors as stored (quantized for GGUF and fp8), from its header only:
    what the DiT holds once loaded (fp8 files upcast at load hold twice this in bf16)."""
    if file_format(path) == "gguf":
        from gguf import GGUFReader

        return sum(int(t.n_bytes) for t in GGUFReader(path).tensors)
    return sum(t["data_offsets"][1] - t["data_offsets"][0] for t in _safetensors_header(Path(path)).values())


def fingerprint(path: str) -> str:
    """`sha256:<hex>` of the whole file up to 1 GiB; above, `size:<bytes>+head-sha256:<hex>` of its
    first 16 MiB (its header and first tensors), so a multi-GB file is named without reading it all."""
    file = Path(path)
    size = file.stat().st_size
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return f"sha256:{digest.hexdigest()}"
        digest.update(f.read(HEADER_HASH_BYTES))
    return f"size:{size}+head-sha256:{digest.hexdigest()}"


def describe(path: str) -> dict:
    """What metadata and PNG info record about a transformer file (a URL: its name only)."""
    if not Path(path).is_file():
        return {"transformer_file": path.rsplit("/", 1)[-1]}
    return {"transformer_file": Path(path).name, "transformer_hash": fingerprint(path),
            "transformer_quantization": quantization(path)}


# The released scheduler configs: Z-Image (Base) samples at shift 6, Z-Image-Turbo at shift 3.
SCHEDULER_SHIFTS = {6.0: "base", 3.0: "turbo"}


def _variant_of_name(name: str) -> str | None:
    """'turbo' or 'base' from a name that says Z-Image (a hub id or a folder), else None."""
    for part in reversed(Path(name.rstrip("/")).parts):  # a hub cache path: models--Tongyi-MAI--Z-Image/...
        part = part.lower()
        if "z-image" in part or "z_image" in part:
            return "turbo" if "turbo" in part else "base"
    return None


def _variant_of_configs(folder: Path) -> str | None:
    """'turbo' or 'base' from a checkpoint folder's own configs: the repo id `save_pretrained`
    records in model_index.json (`_name_or_path`), else the scheduler's shift (6 Base, 3 Turbo)."""
    index = folder / "model_index.json"
    saved_from = json.loads(index.read_text()).get("_name_or_path", "") if index.is_file() else ""
    if variant := _variant_of_name(saved_from):
        return variant
    scheduler = folder / "scheduler" / "scheduler_config.json"
    shift = json.loads(scheduler.read_text()).get("shift") if scheduler.is_file() else None
    return SCHEDULER_SHIFTS.get(shift)


def detect_variant(source: str, setting: str = "auto", folder: Path | None = None) -> str:
    """'turbo' or 'base'. The setting wins. Auto reads the checkpoint's own configs in `folder` (its
    local copy: the repo id it was saved from, else the scheduler's shift), then its name (a hub id
    such as `Tongyi-MAI/Z-Image` vs `Tongyi-MAI/Z-Image-Turbo`, or a folder named after one); a
    checkpoint neither tells (a hub id not downloaded yet, a fine-tune with its own shift) is
    Turbo: pass `--model-variant base` for those."""
    if setting != "auto":
        return setting
    return (folder and _variant_of_configs(folder)) or _variant_of_name(source) or "turbo"

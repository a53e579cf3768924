"""Checkpoint files cut short (an interrupted download, the commonest real fault), found by their
own headers: a safetensors file declares its size (8 bytes + header + the data offsets), so a
shorter file is named with both sizes before anything tries to load it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 * 2**20  # safetensors' own limit on a header


def declared_size(path: Path) -> int | None:
    """The size a safetensors file's header declares; None when the header itself is cut or broken."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        length = struct.unpack("<Q", head)[0]
        if length > MAX_HEADER:
            return None
        raw = f.read(length)
    if len(raw) < length:
        return None
    try:
        header = json.loads(raw)
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return 8 + length + max(ends, default=0)


def damaged(folder) -> list[str]:
    """One line per safetensors file under `folder` whose size is not what its header declares,
    named relative to the folder (never a server path), with both sizes."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*.safetensors")):
        size, declared = path.stat().st_size, declared_size(path)
        if declared != size:
            name = path.relative_to(folder).as_posix()
            found.append(f"{name} is {size:,} bytes, " + (f"its header declares {declared:,}" if declared else
                                                          "too short to hold its own header"))
    return found


def advice(folder, repo: str) -> str:
    """What to say about `folder`'s damaged files ('' when none): which, and the fix."""
    found = damaged(folder) if Path(folder).is_dir() else []
    if not found:
        return ""
    names = " ".join(line.split(" is ")[0] for line in found)
    return (f"Damaged checkpoint file(s), cut short (an interrupted download?): {'; '.join(found)}. To fix: "
            f"re-download them (`hf download {repo} {names} --local-dir <the checkpoint folder>`); the next "
            f"request loads the repaired files, no restart needed.")

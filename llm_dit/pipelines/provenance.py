"""What a PNG recorded against what a new run is about to use (`--from-png`): the reference, init
and structure image hashes, the models and the memory levers. One line per difference."""

from __future__ import annotations

import json

from ..core.images import JSON_KEY, image_sha256, load_image, read_png_text


def recorded(png) -> dict:
    """The PNG's full metadata (empty for a PNG from another tool)."""
    try:
        return json.loads(read_png_text(png).get(JSON_KEY, "{}"))
    except (OSError, ValueError):
        return {}


def mismatches(metadata: dict, manager, references: list | None = None, init=None) -> list[str]:
    """Differences between `metadata` (a PNG's) and this run: its `references`, its `init` image
    (img2img's image, or VL's structure image or first reference), the models and the levers."""
    notes = []
    vl = metadata.get("vl") or {}
    then = [r.get("sha256") for r in vl.get("references", [])]
    if references is not None and then:
        now = [image_sha256(load_image(r, field=f"references[{i}]")) for i, r in enumerate(references)]
        if now != then:
            notes.append(f"references differ from the PNG's: {len(now)} given, {len(then)} recorded, "
                         f"sha256 {[h[:12] for h in now]} vs {[h[:12] for h in then]}")
    if init is not None and "init_image" in metadata:
        now = image_sha256(load_image(init, field="init image"))
        if now != metadata["init_image"].get("sha256"):
            notes.append(f"the init image differs from the PNG's (sha256 {now[:12]} vs "
                         f"{str(metadata['init_image'].get('sha256'))[:12]})")
    for what, then_id, now_id in (("model", metadata.get("model"), manager.zimage_model_id),
                                  ("VL model", vl.get("vl_model"), manager.vl_model_id if vl else None)):
        if then_id and now_id and then_id != now_id:
            notes.append(f"{what}: the PNG was made with {then_id!r}, this run uses {now_id!r}")
    levers, memory = manager.memory_levers(), metadata.get("memory") or {}
    for lever in ("quantize", "offload"):
        if lever in memory and memory[lever] != levers[lever]:
            notes.append(f"{lever}: the PNG was made with {memory[lever]!r}, this run uses {levers[lever]!r}")
    return notes

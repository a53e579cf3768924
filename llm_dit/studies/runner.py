"""The study runner: a study in, a study folder out (a Hugging Face `imagefolder` dataset).

```
DIR/study.json          the study as run, the resolved base request, models and their revisions,
                        library versions, device, memory plan, start/end, status
DIR/cells/cellNNNN.png  every cell (PNG with its full generation metadata, as any image the app saves)
DIR/metadata.jsonl      one row per cell: file_name + every request field + reference, seed, VL
                        share, timings, scores, warnings (`datasets.load_dataset("imagefolder", data_dir=DIR)`)
DIR/summary.csv         one row per configuration, mean and sd over the seeds (see `summary.py`)
DIR/grids/*.png         one labelled grid per reference (drawn once, at the end), plots/*.png
```

While it runs, each process appends its finished rows to `progress/rows-<process>.jsonl`; a cell
is finished when its PNG and its row exist, so `resume` skips it and `finish` merges every row into
`metadata.jsonl`. A cell depends only on its own request, reference and seed (batch size 1), so a
cell re-run (`rerun`) or run by another process is bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.images import load_image
from ..core.request import VLRequest, parse_weights
from ..pipelines.generate import BATCH_KEY, _versions, run, run_batch
from ..pipelines.recipe import condition, prefetch
from ..serving import cancel
from .routes import caption, text_request
from .metrics import palette_distance, ssim
from .study import Study, file_sha256

ROW_FIELDS = [f.name for f in fields(VLRequest) if f.name != "seed"]
SHARED_STAGES = ("vae_encode", "denoise", "decode")  # one pipeline call for every cell of a batch


def cell_name(index: int) -> str:
    return f"cells/cell{index:04d}.png"


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _revision(source: str) -> dict:
    """Where a checkpoint came from: the hub commit of a snapshot folder, else the folder's hash
    (its file names and sizes)."""
    path = Path(source)
    match = re.search(r"snapshots/([0-9a-f]{40})", path.as_posix())
    if match:
        return {"revision": match.group(1)}
    if not path.is_dir():
        return {"source": source}
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\n".encode())
    return {"folder_sha256": h.hexdigest()}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _environment(manager) -> dict:
    import torch

    devices = {"cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        devices["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    settings = manager.settings
    return {
        "models": {"z_image": {"id": manager.zimage_model_id, **_revision(manager.zimage_source)},
                   "vl": {"id": manager.vl_model_id,
                          **({"remote": True} if manager.remote_vl else _revision(manager.vl_source))},
                   "text_encoder": {"id": manager.text_encoder_id, "remote": bool(manager.remote_text)},
                   "metrics": settings.metrics_model or None},
        "versions": {**_versions(), **{p: _version(p) for p in ("accelerate", "pillow", "numpy", "matplotlib",
                                                                 "datasets")}},
        "device": {**devices, "settings": {k: getattr(settings, k) for k in (
            "text_encoder_device", "transformer_device", "vae_device", "vl_device", "dtype")}},
        "memory_plan": manager.memory_plan().lines(),
    }


def create(manager, study: Study, folder: str | Path, session: str = "") -> Path:
    """Make the study folder and its study.json (status `running`). A folder that exists is never
    reused: ValueError saying `resume` or another name."""
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"output folder {str(folder)!r} already exists: `llm-dit study resume {folder}` finishes "
                         f"that study, or choose another --output-dir.")
    study.check(manager.policy)  # every cell valid before anything is written or loaded
    (folder / "cells").mkdir(parents=True)
    base = study.base_request().to_dict()
    base.pop("seed")
    _write_json(folder / "study.json", {
        "study": study.to_dict(), "base_request": base, "cells": len(study.cells()), "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None, "session": session_key(session),
        **_environment(manager)})
    return folder


def read_info(folder: str | Path) -> dict:
    path = Path(folder) / "study.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(folder)!r} is not a study folder (no readable study.json: {err}).") from None


def load_folder_study(folder: str | Path) -> Study:
    """The study of a folder, its references checked against the recorded sha256."""
    study = Study.from_dict(read_info(folder)["study"])
    for ref in [*study.references, *filter(None, (study.control_image, study.mask_image))]:
        if not Path(ref.path).is_file() or file_sha256(ref.path) != ref.sha256:
            raise ValueError(f"reference {ref.name!r} ({ref.path}) is missing or changed since the study ran "
                             f"(sha256 {ref.sha256[:12]}…): put the original file back.")
    return study


def rows(folder: str | Path) -> dict[int, dict]:
    """Every finished cell's row (metadata.jsonl and the per-process progress files), by cell."""
    folder = Path(folder)
    found = {}
    for path in [folder / "metadata.jsonl", *sorted((folder / "progress").glob("rows-*.jsonl"))]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError:  # a line cut short by a kill: that cell is not finished
                        continue
                    if (folder / row["file_name"]).is_file():
                        found[row["cell"]] = row
    return found


def _scores(image, references: list, init, request: VLRequest, study: Study, scorer) -> dict:
    """The study's metrics against the cell's reference; against a blended set, one column per
    reference (`_ref0`, `_ref1`, ...) and their mean weighted by `reference_weights` under the
    plain name. SSIM against the init image (img2img) or the first reference."""
    per = []
    for reference in references:
        scores = {}
        if "palette_distance" in study.metrics:
            scores["palette_distance"] = round(palette_distance(image, reference), 4)
        if scorer is not None and any(m in study.metrics for m in ("style_similarity", "prompt_similarity")):
            scores.update({k: v for k, v in scorer.score(image, reference, request.prompt).items()
                           if k in study.metrics})
        per.append(scores)
    out = per[0]
    if len(per) > 1:
        weights = parse_weights(request.reference_weights, len(per))
        out = {}
        for name in ("palette_distance", "style_similarity"):
            if name in per[0]:
                out.update({f"{name}_ref{i}": scores[name] for i, scores in enumerate(per)})
                out[name] = round(sum(w * s[name] for w, s in zip(weights, per)) / sum(weights), 4)
        if "prompt_similarity" in per[0]:
            out["prompt_similarity"] = per[0]["prompt_similarity"]
    if "ssim" in study.metrics:
        out["ssim"] = round(ssim(image, init or references[0]), 4)
    return out


def _row(cell, result, scores: dict, extract_seconds: float) -> dict:
    meta = result.metadata
    vl = meta.get("vl", {})
    timings, size = meta["timings"], meta.get("batch_size", 1)
    # the pipeline call is shared by the batch; model loading is the run's (counts), not a cell's
    shared = sum(timings.get(k, 0.0) for k in SHARED_STAGES)
    own = timings["total"] - shared - timings.get("load", 0.0)
    return {"file_name": cell_name(cell.index), "cell": cell.index, "reference": cell.reference.name,
            "reference_sha256": cell.reference.sha256, "seed": cell.seed, "route": cell.route,
            **{k: getattr(cell.request, k) for k in ROW_FIELDS},
            "vl_share": vl.get("effective_alpha", 0.0 if cell.route == "text" else None),
            "extract_seconds": extract_seconds, "generate_seconds": round(own + shared / size, 4),
            "batch_size": size, "batch_seconds": round(shared, 4), "forwards": meta["forwards"], **scores,
            **({"caption": meta["caption"]} if cell.route == "text" else {}), "warnings": list(meta.get("warnings", []))}


def _compatible(a, b) -> bool:
    """Two (cell, init, encoding) that one pipeline call can generate together."""
    (ca, ia, _), (cb, ib, _) = a, b
    same = all(getattr(ca.request, k) == getattr(cb.request, k) for k in BATCH_KEY)
    return same and (ia is None) == (ib is None) and ca.request.strength == cb.request.strength


def run_cells(manager, study: Study, folder: str | Path, only: set | None = None, process: int = 0,
              should_stop=None):
    """Run the study's unfinished cells (just those in `only`, when given), appending each row to
    this process's progress file; yields (cell, row, result) after each, in cell order (compatible
    cells of a `batch_size` over 1 share one pipeline call). Extractions and captions come first,
    in one VL session (the VL model loads once); `should_stop()` is asked before each cell (or
    batch) and ends the run with what finished. Returns this process's counts: what the manager's
    caches ran for these cells against the distinct keys they needed, and the model loading time
    apart from any cell's (`load_seconds`)."""
    folder = Path(folder)
    cells = study.check(manager.policy)
    done = rows(folder)
    todo = [c for c in cells if c.index not in done and (only is None or c.index in only)]
    before = {"extractions": manager.vl_cache.misses, "encodes": manager.text_cache.misses,
              "vl_loads": manager.load_counts["vl"]}
    counts = {"process": process, "cells": len(todo), "finished": 0, "load_seconds": {},
              "batch_size": study.batch_size}
    keys, texts = set(), set()

    def count():
        counts.update({"distinct_extractions": len(keys), "distinct_texts": len(texts),
                       "extractions_run": manager.vl_cache.misses - before["extractions"],
                       "encodes_run": manager.text_cache.misses - before["encodes"],
                       "vl_loads": manager.load_counts["vl"] - before["vl_loads"]})

    count()
    if not todo:
        return counts
    images = {r.name: load_image(r.path, field=f"reference {r.name}") for r in study.references}

    def images_of(cell) -> list:
        return [images[r.name] for r in study.members(cell.reference)]

    structure = load_image(study.structure_image, field="structure_image") if study.structure_image else None
    control, mask = (load_image(r.path, field=name) if r else None for r, name in (
        (study.control_image, "control_image"), (study.mask_image, "mask_image")))
    scorer = manager.scorer()
    extract_seconds, captions = {}, {}

    def uncached(cell) -> bool:
        try:
            prefetch(manager, cell.request, images_of(cell), cache_only=True)
        except LookupError:
            return True
        return False

    probed = manager.vl_cache.misses
    local_captions = study.captioner.get("backend", "qwen3_vl") == "qwen3_vl"
    needs_vl = not manager.remote_vl and any(uncached(c) if c.route == "embedding" else local_captions for c in todo)
    before["extractions"] += manager.vl_cache.misses - probed  # lookups only: they ran nothing
    with manager.vl_session():
        if needs_vl:  # loaded apart from any cell's time (already cached: not at all)
            start = time.perf_counter()
            with manager.vl_model():
                counts["load_seconds"]["vl"] = round(time.perf_counter() - start, 4)
        for cell in todo:
            cancel.check()
            start = time.perf_counter()
            if cell.route == "text":
                if cell.reference.name not in captions:
                    captions[cell.reference.name] = caption(manager, images_of(cell)[0], cell.request,
                                                             study.captioner)
            else:
                prefetch(manager, cell.request, images_of(cell))
            extract_seconds[cell.index] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    manager.pipeline()
    counts["load_seconds"]["z_image"] = round(time.perf_counter() - start, 4)
    progress = folder / "progress" / f"rows-{process}.jsonl"
    progress.parent.mkdir(exist_ok=True)
    if progress.is_file() and not progress.read_bytes().endswith(b"\n"):
        with open(progress, "a", encoding="utf-8") as f:  # a row cut short by a kill stays on its own line
            f.write("\n")
    made = {}  # text-route cells whose generation is the same (only VL fields differ): made once

    def generate(batch) -> list:
        """[(cell, init, encoding)] -> their results (text-route cells: one each, the same made once)."""
        cell, init, _ = batch[0]
        if cell.route == "text":
            request = text_request(cell.request, captions[cell.reference.name])
            key = (cell.reference.name, json.dumps(request.to_dict(), sort_keys=True))
            made[key] = made.get(key) or run(manager, request, init, control_image=control, mask_image=mask)
            result = made[key]
            result.metadata.update(route="text", caption=captions[cell.reference.name])
            return [result]
        return run_batch(manager, [c.request for c, _, _ in batch], [i for _, i, _ in batch],
                         [e for _, _, e in batch], control, mask)

    def save(batch):
        for (cell, init, _), result in zip(batch, generate(batch)):
            result.metadata["study"] = {"cell": cell.index, "reference": vars(cell.reference), "coords": cell.coords}
            path = folder / cell_name(cell.index)
            path.unlink(missing_ok=True)  # a PNG without its row (killed between the two) is redone
            result.save(folder / "cells", name=path.stem)
            row = _row(cell, result, _scores(result.image, images_of(cell), init, cell.request, study, scorer),
                       extract_seconds[cell.index])
            with open(progress, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=str) + "\n")
            counts["finished"] += 1
            count()
            yield cell, row, result

    pending = []
    for cell in todo:
        cancel.check()
        if pending and (len(pending) >= study.batch_size or pending[0][0].route == "text"):
            yield from save(pending)
            pending = []
        if should_stop is not None and should_stop():
            break
        init = (structure or images_of(cell)[0]) if cell.request.strength < 1.0 else None
        if cell.route == "text":
            encoding = None
            texts.add(text_request(cell.request, captions[cell.reference.name]).prompt)
        else:
            try:  # prefetched above; only a VL cache smaller than the study's keys can miss
                encoding = condition(manager, cell.request, images_of(cell), cache_only=True).encoding
            except LookupError:
                encoding = condition(manager, cell.request, images_of(cell)).encoding
            keys.update(e["key"] for e in encoding.metadata["vl"]["extractions"])
            texts.add(encoding.chat)
        entry = (cell, init, encoding)
        if pending and (cell.route == "text" or not _compatible(pending[0], entry)):
            yield from save(pending)
            pending = []
        pending.append(entry)
    if pending:  # the last batch (after a stop too: its cells were begun)
        yield from save(pending)
    return counts


def finish(folder: str | Path, study: Study, counts: dict | None = None, plots: bool = True) -> dict:
    """Merge every row into metadata.jsonl (by cell), write summary.csv, the grids and (`plots`) the plots,
    and close study.json (status `finished`, or `incomplete` with cells missing)."""
    from .summary import plot_summary, summarize, write_summary

    folder = Path(folder)
    found = rows(folder)
    tmp = folder / ".metadata.jsonl.partial"
    tmp.write_text("".join(json.dumps(found[i], default=str) + "\n" for i in sorted(found)), encoding="utf-8")
    os.replace(tmp, folder / "metadata.jsonl")
    for part in (folder / "progress").glob("rows-*.jsonl"):
        part.unlink()
    if (folder / "progress").is_dir():
        (folder / "progress").rmdir()
    table = summarize([found[i] for i in sorted(found)], study)
    write_summary(table, folder / "summary.csv")
    drawn = plot_summary(folder / "summary.csv", folder / "plots") if plots else []
    grids = draw_grids(folder, study, found)
    info = read_info(folder)
    total = len(study.cells())
    info.update({"status": "finished" if len(found) == total else "incomplete", "finished_cells": len(found),
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if counts:
        info.setdefault("runs", []).append(counts)
    _write_json(folder / "study.json", info)
    return {"folder": str(folder), "status": info["status"], "cells": total, "finished": len(found),
            "metadata": str(folder / "metadata.jsonl"), "summary": str(folder / "summary.csv"),
            "grids": [str(g) for g in grids], "plots": [str(p) for p in drawn]}


def draw_grids(folder: Path, study: Study, found: dict) -> list[Path]:
    """One labelled grid per reference (set): the first axis across, the second axis (or else the
    seeds, when there are several) down; the first seed when the seeds are not on the grid; one
    grid per value of any further axis. Drawn once (its cells shrunk to keep it bounded:
    `grid.draw_grid`); named grid-RR-CC.png (reference, further-axis combination)."""
    from .grid import axis_label, draw_grid

    axes = study.axes or [("reference", [None])]
    seed_axis = any(a == "seed" for a, _ in axes)
    x_axis, xs = axes[0]
    y_axis, ys = axes[1] if len(axes) > 1 else (("seed", study.seeds) if len(study.seeds) > 1 else ("", [None]))
    rest = axes[2:]
    out = folder / "grids"
    out.mkdir(exist_ok=True)
    by_key = {}
    for cell in study.cells():
        if cell.index in found:
            y = cell.seed if y_axis == "seed" and not seed_axis else cell.coords.get(y_axis)
            key = (cell.reference.name, tuple(cell.coords.get(a) for a, _ in rest), cell.coords.get(x_axis), y)
            if y_axis == "seed" or seed_axis or cell.seed == study.seeds[0]:
                by_key[key] = cell.index
    written = []
    for r, ref in enumerate(study.reference_sets()):
        combos = sorted({k[1] for k in by_key if k[0] == ref.name}, key=repr)
        for c, combo in enumerate(combos):
            images = {(x, y): Image.open(folder / cell_name(i)).convert("RGB")
                      for (name, rest_key, x, y), i in by_key.items() if name == ref.name and rest_key == combo}
            title = " · ".join([f"{ref.name} ({ref.sha256[:12]})"] + [axis_label(a, v) for (a, _), v in zip(rest, combo)]
                               + ([f"seed: {study.seeds[0]}"] if y_axis != "seed" and not seed_axis else []))
            path = out / f"grid-{r:02d}-{c:02d}.png"
            draw_grid(images, x_axis, xs, y_axis, ys, title).save(path)
            written.append(path)
    return written


def run_study(manager, study: Study, folder: str | Path, session: str = "", should_stop=None):
    """Create the folder, run every cell, finish; yields (cell, row, image) per cell, then the summary."""
    create(manager, study, folder, session)
    counts = yield from _stopped_on_error(folder, run_cells(manager, study, folder, should_stop=should_stop))
    yield finish(folder, study, {"processes": 1, "per_process": [counts]})


def resume(manager, folder: str | Path, should_stop=None):
    """Run the cells a study folder lacks (finished cells untouched), then finish it."""
    study = load_folder_study(folder)
    _mark(folder, "running")
    counts = yield from _stopped_on_error(folder, run_cells(manager, study, folder, should_stop=should_stop))
    yield finish(folder, study, {"processes": 1, "per_process": [counts]})


def _stopped_on_error(folder, cells):
    """`cells`, and when they end in an exception (a cancel, a client gone, a failure), study.json says
    `stopped` (its finished cells kept; `resume` goes on) instead of `running` for ever."""
    try:
        return (yield from cells)
    except BaseException:
        _mark(folder, "stopped")
        raise


def _mark(folder, status: str) -> None:
    info = read_info(folder)
    info.update(status=status, finished_cells=len(rows(Path(folder))))
    _write_json(Path(folder) / "study.json", info)


def rerun(manager, folder: str | Path, index: int) -> dict:
    """Regenerate cell `index` into DIR/rerun/ and compare its pixels with the recorded cell."""
    folder = Path(folder)
    study = load_folder_study(folder)
    cells = study.cells()
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cells):
        raise ValueError(f"--cell {index!r} is not a cell of this study: use 0 to {len(cells) - 1} "
                         f"(metadata.jsonl's `cell`).")
    scratch = folder / "rerun" / str(index)
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "cells").mkdir(parents=True)
    for _ in run_cells(manager, study, scratch, only={index}):
        pass
    original, again = folder / cell_name(index), scratch / cell_name(index)
    target = folder / "rerun" / f"cell{index:04d}.png"
    os.replace(again, target)
    shutil.rmtree(scratch)
    identical = original.is_file() and np.array_equal(np.asarray(Image.open(original)), np.asarray(Image.open(target)))
    return {"cell": index, "original": str(original), "rerun": str(target), "identical": bool(identical)}


def session_key(session: str) -> str:
    """What a study folder records of who started it (hosted: the visitor's owner token,
    `ui/owners.py`; a hash, never the token)."""
    return hashlib.sha256(session.encode("utf-8", "replace")).hexdigest()[:16] if session else ""


def list_studies(root: str | Path, session: str | None = None) -> list[dict]:
    """The study folders directly in `root`, newest first: name, started, status, cells, size.
    With `session` (hosted: an owner token), only the studies that owner started."""
    root = Path(root)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if not (folder / "study.json").is_file() or folder.is_symlink():
            continue
        try:
            info = read_info(folder)
        except ValueError:
            continue
        if session is not None and (not session or info.get("session") != session_key(session)):
            continue  # hosted: a visitor's own studies only (none without a session)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        status = info.get("status", "running")
        done = len(rows(folder)) if status == "running" else info.get("finished_cells", 0)
        found.append({"name": folder.name, "started": info.get("started", ""), "status": status,
                      "cells": f"{done} / {info.get('cells', '?')}", "size_mb": round(size / 2**20, 2)})
    return sorted(found, key=lambda s: s["started"], reverse=True)

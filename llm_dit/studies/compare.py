"""Comparison sweeps: up to three axes over a VL request -> cells -> labelled grids + a table.

Everything not on an axis comes from the base request; one seed for all cells unless `seed` is
an axis. Extractions and prompt encodings go through the model manager's caches, so each distinct
extraction key and text is computed once per sweep whatever the number of cells; compatible
cells can run as one batched pipeline call. The `route` axis adds the baseline every reviewer asks
for: Qwen3-VL captions the reference and that caption plus the prompt goes through plain
txt2img/img2img, no embedding blend.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from ..serving import cancel
from ..pipelines.recipe import condition, prefetch
from .grid import axis_label, difference, draw_grid
from ..pipelines.generate import BATCH_KEY, GenerationResult, resolve_seed, run_batch
from ..core.images import load_image
from .metrics import palette_distance, ssim
from ..core.request import (GenerationRequest, RewriteRequest, VLRequest, check_field, parse_weights, to_number,
                           validate)
from ..pipelines.rewrite import rewrite

# axis name -> VLRequest field (None: the route axis)
AXES = {
    "blend_mode": "blend_mode", "alpha": "alpha", "strength": "strength", "vl_hidden_layer": "vl_hidden_layer",
    "token_mode": "token_mode", "normalization": "normalization", "outlier_mode": "outlier_mode",
    "think_block": "vl_think_block", "steps": "num_inference_steps", "seed": "seed", "vl_text": "vl_text",
    "vl_start": "vl_start", "vl_end": "vl_end", "concat_tokens": "concat_tokens", "prompt": "prompt",
    "route": None,
}
ROUTES = ("embedding", "text")  # `route`: the VL embedding blend, or Qwen3-VL's caption as text
SHARED_STAGES = ("vae_encode", "denoise", "decode")  # one pipeline call for every cell of a batch
MAX_CELLS = 1024  # the highest cell_limit one may ask for
EXAMPLE_VALUES = {  # what an axis picker fills in when chosen
    "blend_mode": "linear, linear_rms, adain", "alpha": "0, 0.3, 0.6", "strength": "0.7, 0.8, 0.9",
    "vl_hidden_layer": "-2, -6, -8", "token_mode": "full, image_only, text_only",
    "normalization": "global, per_dim, hybrid", "outlier_mode": "none, zero, clamp, scale",
    "think_block": "off, on", "steps": "4, 8", "seed": "1, 2, 3", "vl_text": " | A photograph.",
    "vl_start": "0, 0.25, 0.5", "vl_end": "0.5, 0.75, 1", "concat_tokens": "8, 32, 0",
    "prompt": "A fox on a hill | A quiet harbour town",
    "route": "embedding, text",
}
CAPTION_TEMPLATE = "Image captioner"
TRUE, FALSE = ("on", "true", "yes", "with", "1"), ("off", "false", "no", "without", "0")


def parse_values(axis: str, text) -> list:
    """An axis's values from a list or a comma-separated string (`vl_text`: `|`-separated;
    `prompt`: one per line, or `|`-separated on one line)."""
    if axis not in AXES:
        raise ValueError(f"axis {axis!r} is unknown: use one of {', '.join(AXES)}.")
    separator = {"vl_text": "|", "prompt": "\n" if "\n" in str(text) else "|"}.get(axis, ",")
    items = list(text) if isinstance(text, (list, tuple)) else [v.strip() for v in str(text).split(separator)]
    items = [v for v in items if not (isinstance(v, str) and v == "" and axis != "vl_text")]
    if not items:
        raise ValueError(f"axis {axis!r} has no values: give them comma-separated, e.g. 0, 0.3, 0.5.")
    name = AXES[axis]
    values = []
    for raw in items:
        if axis == "route":
            if raw not in ROUTES:
                raise ValueError(f"route value {raw!r} is unknown: use embedding and/or text.")
            values.append(raw)
            continue
        default = VLRequest.__dataclass_fields__[name].default
        try:
            if isinstance(default, bool):
                word = str(raw).lower()
                if word not in TRUE + FALSE:
                    raise ValueError(f"{name}={raw!r} is not on/off.")
                value = word in TRUE
            elif isinstance(default, (int, float)):
                value = to_number(raw, type(default))
            else:
                value = str(raw)
            values.append(check_field(name, value))
        except ValueError as err:
            raise ValueError(f"axis {axis!r}: {err}") from None
    if len(set(map(str, values))) != len(values):
        raise ValueError(f"axis {axis!r} repeats a value: {values}.")
    return values


@dataclass
class SweepSpec:
    x_axis: str = "blend_mode"
    x_values: str = "linear, adain"
    y_axis: str = ""
    y_values: str = ""
    z_axis: str = ""
    z_values: str = ""
    cell_limit: int = 64
    batch_size: int = 1
    diff_base: int = -1  # a cell number: every cell's difference against it (-1: none)

    def axes(self) -> list[tuple[str, list]]:
        """[(axis, values)] for x, y, z (the ones given), checked."""
        axes = []
        for side, axis, values in (("x", self.x_axis, self.x_values), ("y", self.y_axis, self.y_values),
                                   ("z", self.z_axis, self.z_values)):
            if not str(axis).strip():
                continue
            if any(axis == a for a, _ in axes):
                raise ValueError(f"{side}_axis: axis {axis!r} is used twice: each axis may appear once.")
            if axis not in AXES:
                raise ValueError(f"{side}_axis={axis!r} is unknown: use one of {', '.join(AXES)}.")
            try:
                axes.append((axis, parse_values(axis, values)))
            except ValueError as err:
                raise ValueError(f"{side}_values: {err}") from None
        if not axes or axes[0][0] != self.x_axis:
            raise ValueError("x_axis is empty: choose at least the X axis (e.g. alpha).")
        if str(self.z_axis).strip() and not str(self.y_axis).strip():
            raise ValueError("z_axis is set but y_axis is empty: use the Y axis before the Z axis.")
        for name, low, high in (("batch_size", 1, 16), ("cell_limit", 1, MAX_CELLS)):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range: use a whole number from {low} to {high}.")
        count = 1
        for _, values in axes:
            count *= len(values)
        if count > int(self.cell_limit):
            raise ValueError(f"cell_limit: the sweep has {count} cells, more than cell_limit={self.cell_limit}: "
                             f"use fewer values or raise the limit.")
        base = self.diff_base
        if isinstance(base, float) and base.is_integer():
            base = int(base)
        if isinstance(base, bool) or not isinstance(base, int) or not -1 <= base < count:
            raise ValueError(f"diff_base={self.diff_base!r} is not a cell of this sweep: use a cell number "
                             f"from 0 to {count - 1} (the table's `cell`), or -1 for no difference maps.")
        return axes


@dataclass
class Cell:
    index: int
    coords: dict  # axis -> value
    request: VLRequest
    route: str = "embedding"
    result: GenerationResult | None = None
    metrics: dict = field(default_factory=dict)
    extract_seconds: float = 0.0  # its own extractions (0 where an earlier cell's are reused)


@dataclass
class SweepResult:
    axes: list
    cells: list[Cell]
    counts: dict
    caption: str | None = None
    stopped: bool = False
    diff_base: int = -1

    def finished(self) -> list[Cell]:
        return [c for c in self.cells if c.result is not None]

    def _base_image(self):
        base = next((c for c in self.finished() if c.index == self.diff_base), None)
        return base.result.image if base is not None else None

    def rows(self) -> list[dict]:
        rows = []
        for cell in self.finished():
            meta = cell.result.metadata
            timings, size = meta["timings"], meta.get("batch_size", 1)
            # the pipeline call is shared by the batch; model loading is the sweep's (counts), not a cell's
            shared = sum(timings.get(k, 0.0) for k in SHARED_STAGES)
            own = timings["total"] - shared - timings.get("load", 0.0)
            rows.append({"cell": cell.index, **{a: cell.coords[a] for a, _ in self.axes}, "route": cell.route,
                         "seed": cell.result.seed, "effective_alpha": meta.get("vl", {}).get("effective_alpha"),
                         "batch_size": size, "batch_seconds": round(shared, 4),
                         "extract_seconds": cell.extract_seconds,
                         "seconds_per_cell": round(own + shared / size, 4), **cell.metrics})
        base = self._base_image()
        if base is not None:
            for row, cell in zip(rows, self.finished()):
                row["diff_to_base"] = round(difference(cell.result.image, base)[0], 4)
        return rows

    def table_csv(self) -> str:
        rows = self.rows()
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return out.getvalue()

    def table_json(self) -> str:
        return json.dumps({"axes": [[a, v] for a, v in self.axes], "counts": self.counts, "caption": self.caption,
                           "stopped": self.stopped, "cells": self.rows()}, indent=2)

    def _sides(self):
        (x_axis, xs), (y_axis, ys) = self.axes[0], (self.axes[1] if len(self.axes) > 1 else ("", [None]))
        z_axis, zs = self.axes[2] if len(self.axes) > 2 else ("", [None])
        return x_axis, xs, y_axis, ys, z_axis, zs

    def captions(self, diff: bool = False) -> list[str]:
        """What each of `grids(diff)` shows, in words: the axes, its Z value, a difference map."""
        if diff and self._base_image() is None:
            return []
        x_axis, xs, y_axis, ys, z_axis, zs = self._sides()
        shape = f"{x_axis} × {y_axis} ({len(xs)} × {len(ys)})" if y_axis else f"{x_axis} ({len(xs)})"
        return [" · ".join(([f"difference to cell {self.diff_base}"] if diff else []) + [shape] +
                           ([axis_label(z_axis, z)] if z_axis else [])) for z in zs]

    def grids(self, diff: bool = False) -> list[Image.Image]:
        """One labelled grid per Z value (a single grid without a Z axis); with `diff`, of each
        cell's difference heatmap against the base cell (none until the base cell is done)."""
        base = self._base_image()
        if diff and base is None:
            return []
        x_axis, xs, y_axis, ys, z_axis, zs = self._sides()
        grids = []
        for z in zs:
            images = {}
            for cell in self.finished():
                if not z_axis or cell.coords[z_axis] == z:
                    key = (cell.coords[x_axis], cell.coords.get(y_axis) if y_axis else None)
                    images[key] = difference(cell.result.image, base)[1] if diff else cell.result.image
            title = axis_label(z_axis, z) if z_axis else ""
            if diff:
                title = (title + " · " if title else "") + f"difference to cell {self.diff_base}"
            grids.append(draw_grid(images, x_axis, xs, y_axis, ys, title))
        return grids


def plan(spec: SweepSpec, base: VLRequest) -> tuple[list, list[Cell]]:
    """The axes and one cell per combination (Z outermost, then Y, then X)."""
    axes = spec.axes()
    cells = []
    for i, combo in enumerate(itertools.product(*[values for _, values in reversed(axes)])):
        coords = dict(zip([a for a, _ in reversed(axes)], combo))
        overrides = {AXES[a]: v for a, v in coords.items() if AXES[a]}
        if coords.get("vl_text") is not None:
            overrides["vl_use_prompt"] = False
        cells.append(Cell(i, coords, replace(base, **overrides), coords.get("route", "embedding")))
    return axes, cells


def caption_request(request: VLRequest, captioner: dict | None = None) -> RewriteRequest:
    """The text route's captioning: the "Image captioner" template on local Qwen3-VL, or on any
    rewrite backend `captioner` names (RewriteRequest fields, e.g. an OpenAI-compatible server)."""
    seed = request.seed if request.seed != -1 else 0
    return replace(RewriteRequest(prompt="", template=CAPTION_TEMPLATE, backend="qwen3_vl", seed=seed,
                                  max_new_tokens=160), **(captioner or {}))


def _caption(manager, reference, request: VLRequest, captioner: dict | None = None) -> str:
    return rewrite(manager, caption_request(request, captioner), reference).text


def iter_sweep(manager, spec: SweepSpec, base: VLRequest, references: list, structure_image=None,
               should_stop=None, only: set | None = None):
    """Run the cells in order, yielding the sweep after each finished cell (or batch). Stopping
    (`should_stop()` true, or closing the generator) keeps what was finished. With `only` (cell
    indices), just those cells run (one process's share of a sweep split over several).

    First, in one VL session (the model loads at most once and is released before the DiT runs),
    the text-route caption and every extraction the cells need; then the cells themselves.
    """
    if not references:
        raise ValueError("references: no reference image: a comparison sweep conditions on one.")
    base = resolve_seed(validate(base, img2img=base.strength < 1.0, policy=manager.policy))
    axes, cells = plan(spec, base)
    for cell in cells:
        validate(cell.request, img2img=cell.request.strength < 1.0, policy=manager.policy)
    mine = [c for c in cells if only is None or c.index in only]
    images = [load_image(r, field=f"references[{i}]") for i, r in enumerate(references)]
    structure = load_image(structure_image, field="structure_image") if structure_image is not None else None
    scorer = manager.scorer()  # None without --metrics-model: the cheap metrics only
    # every count is this sweep's own: what the manager's counters did since it began
    before = {"extractions": manager.vl_cache.misses, "encodes": manager.text_cache.misses,
              "vl_loads": manager.load_counts["vl"]}
    keys, texts = set(), set()
    sweep = SweepResult(axes, cells, {}, diff_base=int(spec.diff_base))
    with manager.vl_session():
        if any(c.route == "text" for c in mine):
            sweep.caption = _caption(manager, images[0], base)
        for cell in mine:
            if cell.route == "embedding":
                start = time.perf_counter()
                prefetch(manager, cell.request, images)
                cell.extract_seconds = round(time.perf_counter() - start, 4)
    pending: list[tuple[Cell, object, object]] = []

    def count():
        sweep.counts = {"cells": len(cells), "finished": len(sweep.finished()), "distinct_extractions": len(keys),
                        "distinct_texts": len(texts),
                        "extractions_run": manager.vl_cache.misses - before["extractions"],
                        "encodes_run": manager.text_cache.misses - before["encodes"], "batch_size": spec.batch_size,
                        "load_seconds": round(sum(c.result.metadata["timings"].get("load", 0.0)
                                                  for c in sweep.finished()), 4),
                        "vl_loads": manager.load_counts["vl"] - before["vl_loads"]}

    def flush():
        requests = [c.request if c.route == "embedding" else _text_request(c.request, sweep.caption)
                    for c, _, _ in pending]
        results = run_batch(manager, requests, [i for _, i, _ in pending], [e for _, _, e in pending])
        for (cell, init, _), result in zip(pending, results):
            cell.result = result
            if cell.route == "text":  # the caption baseline says so in its own metadata
                result.metadata.update(route="text", caption=sweep.caption)
            cell.metrics = {**_against_references(result.image, images, cell.request, scorer),
                            "ssim": round(ssim(result.image, init or images[0]), 4)}
        pending.clear()
        count()

    for cell in mine:
        cancel.check()  # the client went away: stop before the next cell
        if should_stop is not None and should_stop():
            sweep.stopped = True
            break
        init = (structure or images[0]) if cell.request.strength < 1.0 else None
        if cell.route == "text":
            encoding = None
            texts.add(_text_request(cell.request, sweep.caption).prompt)
        else:
            try:  # prefetched above; only a VL cache smaller than the sweep's keys can miss
                encoding = condition(manager, cell.request, images, cache_only=True).encoding
            except LookupError:
                encoding = condition(manager, cell.request, images).encoding
            keys.update(e["key"] for e in encoding.metadata["vl"]["extractions"])
            texts.add(encoding.chat)
        if pending and (len(pending) >= spec.batch_size or not _compatible(pending[0], (cell, init, encoding))):
            flush()
            yield sweep
        pending.append((cell, init, encoding))
    if pending:
        flush()
    count()
    yield sweep


def run_sweep(manager, spec: SweepSpec, base: VLRequest, references: list, structure_image=None,
              should_stop=None, only: set | None = None) -> SweepResult:
    """Run the whole sweep (or until `should_stop()`, or just the cells in `only`); returns the
    finished cells and the counts."""
    sweep = None
    for sweep in iter_sweep(manager, spec, base, references, structure_image, should_stop, only):
        pass
    return sweep


def _against_references(image, references: list, request: VLRequest, scorer) -> dict:
    """Palette distance (and with a scorer, style similarity) to each reference of the blend: with
    several, one column each (`_ref0`, `_ref1`, ...) and their mean weighted by `reference_weights`
    under the plain name; prompt similarity once."""
    per = []
    for reference in references:
        scores = {"palette_distance": round(palette_distance(image, reference), 4)}
        if scorer is not None:
            scores.update(scorer.score(image, reference, request.prompt))
        per.append(scores)
    if len(per) == 1:
        return per[0]
    weights = parse_weights(request.reference_weights, len(per))
    out = {}
    for name in ("palette_distance", "style_similarity"):
        if name in per[0]:
            out.update({f"{name}_ref{i}": scores[name] for i, scores in enumerate(per)})
            out[name] = round(sum(w * s[name] for w, s in zip(weights, per)) / sum(weights), 4)
    if "prompt_similarity" in per[0]:
        out["prompt_similarity"] = per[0]["prompt_similarity"]
    return out


def _text_request(request: VLRequest, caption: str) -> GenerationRequest:
    """The text route: the prompt plus the VL caption, as a plain generation request."""
    plain, _ = GenerationRequest.from_dict({**request.to_dict(), "prompt": f"{request.prompt}\n\nThe image's look: {caption}"})
    return plain


def _compatible(a, b) -> bool:
    (ca, ia, _), (cb, ib, _) = a, b
    same = all(getattr(ca.request, k) == getattr(cb.request, k) for k in BATCH_KEY)
    return same and (ia is None) == (ib is None) and ca.request.strength == cb.request.strength


def save_outputs(sweep: SweepResult, folder: str | Path, stem: str, saved: dict | None = None,
                 grids: bool = True) -> dict:
    """Grids (PNG; not with `grids=False`), each cell's PNG with full metadata, and the table as
    CSV and JSON. Tables are rewritten under fixed names; a cell already in `saved` (index -> path)
    is not written again, so saving after every cell stays linear, and a UI that passes
    `grids=False` until the last cell draws each grid once."""
    folder = Path(getattr(folder, "path", folder))
    folder.mkdir(parents=True, exist_ok=True)
    saved = {} if saved is None else saved
    drawn = []
    for kind, images in (("grid", sweep.grids()), ("diff", sweep.grids(diff=True))) if grids else ():
        for i, grid in enumerate(images):
            path = folder / f"{stem}-{kind}{i}.png"
            grid.save(path)
            drawn.append(str(path))
    for c in sweep.finished():
        if c.index not in saved:
            saved[c.index] = str(c.result.save(folder / f"{stem}-cells", name=f"cell{c.index:03d}"))
    cells = [saved[c.index] for c in sweep.finished()]
    (folder / f"{stem}.csv").write_text(sweep.table_csv())
    (folder / f"{stem}.json").write_text(sweep.table_json())
    return {"grids": drawn, "cells": cells, "csv": str(folder / f"{stem}.csv"), "json": str(folder / f"{stem}.json")}



def load_sweeps(folder: Path | None = None) -> dict[str, dict]:
    """Sweep presets from the study presets (`presets/studies/*.toml`): {name: {"description",
    "spec": SweepSpec fields (the first axis across, then down, then one grid each), "base": request
    fields}}. A study preset's references and seeds are a study's own: a sweep takes the tab's."""
    import tomllib

    from ..core.presets import PRESETS_DIR

    names = {field: axis for axis, field in AXES.items()} | {"route": "route"}
    presets = {}
    for path in sorted(Path(folder or PRESETS_DIR / "studies").glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            axes = list(data.get("axes", {}).items())
            if not 1 <= len(axes) <= 3 or any(a not in names for a, _ in axes):
                raise ValueError(f"a sweep takes one to three axes of {', '.join(names)}; got {[a for a, _ in axes]}")
            spec = {}
            for side, (field_name, values) in zip("xyz", axes):
                separator = {"vl_text": " | ", "prompt": "\n"}.get(field_name, ", ")
                spec[f"{side}_axis"] = names[field_name]
                spec[f"{side}_values"] = separator.join(("on" if v else "off") if isinstance(v, bool) else str(v)
                                                        for v in values)
            base = dict(data.get("base", {}))
            SweepSpec(**spec).axes()
            for key, value in base.items():
                check_field(key, value)
        except (ValueError, KeyError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"study preset {path}: {err}") from None
        presets[data.get("name", path.stem)] = {"description": data.get("description", ""), "spec": spec, "base": base}
    return presets

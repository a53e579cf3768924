"""Comparison sweeps: up to three axes over a VL request -> a study folder, labelled grids, a table.

A sweep is a study (`study.py`) with one reference set (the references blended in every cell)
and one seed (unless `seed` is an axis), its x/y/z axes the study's axes, run by the study runner
(`runner.py`) into a study folder: resumable, re-runnable and listed in the Studies tab like any
study. Everything not on an axis comes from the base request. Extractions and prompt encodings
go through the model manager's caches, so each distinct extraction key and text is computed once
per sweep whatever the number of cells; compatible cells can run as one batched pipeline call.
The folder adds the sweep's own table (`sweep.csv`, `sweep.json`: one row per cell, with each
cell's difference to a base cell) and grids (`grids/sweep-NN.png`, `grids/diff-NN.png`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..core.images import load_image
from ..core.request import VLRequest, check_field, to_number, validate
from ..pipelines.generate import GenerationResult, resolve_seed
from .grid import axis_label, difference, draw_grid
from .routes import ROUTES
from .runner import cell_name, create, finish, read_info, rows as study_rows, run_cells
from .study import CHEAP_METRICS, MODEL_METRICS, Reference, Study, file_sha256

# axis name -> VLRequest field (None: the route axis)
AXES = {
    "blend_mode": "blend_mode", "alpha": "alpha", "strength": "strength", "vl_hidden_layer": "vl_hidden_layer",
    "token_mode": "token_mode", "normalization": "normalization", "outlier_mode": "outlier_mode",
    "think_block": "vl_think_block", "steps": "num_inference_steps", "seed": "seed", "vl_text": "vl_text",
    "vl_start": "vl_start", "vl_end": "vl_end", "concat_tokens": "concat_tokens", "prompt": "prompt",
    "route": None,
}
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
class SweepCell:
    index: int
    coords: dict  # sweep axis -> value
    request: VLRequest
    route: str
    row: dict  # its row in the study's metadata.jsonl
    image: Image.Image
    result: GenerationResult | None = None  # in the process that generated it


@dataclass
class SweepResult:
    axes: list  # [(sweep axis, values)]
    cells: list[SweepCell]  # the finished cells, in cell order
    counts: dict
    caption: str | None = None
    stopped: bool = False
    diff_base: int = -1
    outputs: dict = field(default_factory=dict)  # the files, once the sweep is finished (`save_sweep`)

    def finished(self) -> list[SweepCell]:
        return self.cells

    def _base_image(self):
        return next((c.image for c in self.cells if c.index == self.diff_base), None)

    def rows(self) -> list[dict]:
        rows = []
        for cell in self.cells:
            row = cell.row
            scores = {k: v for k, v in row.items() if k.startswith(CHEAP_METRICS + MODEL_METRICS)}
            rows.append({"cell": cell.index, **cell.coords, "route": cell.route, "seed": row["seed"],
                         "effective_alpha": row["vl_share"], "batch_size": row["batch_size"],
                         "batch_seconds": row["batch_seconds"], "extract_seconds": row["extract_seconds"],
                         "seconds_per_cell": row["generate_seconds"], **scores})
        base = self._base_image()
        if base is not None:
            for row, cell in zip(rows, self.cells):
                row["diff_to_base"] = round(difference(cell.image, base)[0], 4)
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
            for cell in self.cells:
                if not z_axis or cell.coords[z_axis] == z:
                    key = (cell.coords[x_axis], cell.coords.get(y_axis) if y_axis else None)
                    images[key] = difference(cell.image, base)[1] if diff else cell.image
            title = axis_label(z_axis, z) if z_axis else ""
            if diff:
                title = (title + " · " if title else "") + f"difference to cell {self.diff_base}"
            grids.append(draw_grid(images, x_axis, xs, y_axis, ys, title))
        return grids


def store_references(references: list, store: str | Path) -> list[Reference]:
    """A sweep's references as study references: a file is used where it is; an image (uploaded,
    or in memory) is written once under `store/<sha256>/` (a resumed or re-run sweep needs it)."""
    refs = []
    for i, source in enumerate(references):
        if isinstance(source, (str, Path)) and Path(source).is_file():
            load_image(str(source), field=f"references[{i}]")  # refuses a bad image before any cell runs
            path = Path(source).resolve()
        else:
            image = load_image(source, field=f"references[{i}]")
            data = io.BytesIO()
            image.save(data, format="PNG")
            folder = Path(store) / hashlib.sha256(data.getvalue()).hexdigest()[:32]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"reference{i}.png"
            if not path.exists():
                path.write_bytes(data.getvalue())
        refs.append(Reference(_label(path.name, [r.name for r in refs]), str(path), file_sha256(path)))
    return refs


def _label(name: str, taken: list) -> str:
    """A reference's label: its file name, numbered when an earlier reference of the blend has it
    (two uploads are often both `image.png`)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    label, n = name, 1
    while label in taken:
        n += 1
        label = f"{stem} ({n}){suffix}"
    return label


def to_study(spec: SweepSpec, base: VLRequest, references: list[Reference], structure_image: str = "",
             scorer: bool = False, name: str = "sweep") -> Study:
    """The sweep as a study: its references one blended set, the base request's seed its one seed
    (unless `seed` is an axis), the x/y/z axes the study's axes (x fastest, z outermost)."""
    axes = [(AXES[a] or "route", values) for a, values in spec.axes()]
    on_axes = {a for a, _ in axes}
    fixed = {k: v for k, v in base.to_dict().items() if k != "seed" and k not in on_axes}
    seeds = dict(axes).get("seed") or [base.seed]
    return Study(name, references, list(seeds), axes, fixed,
                 list(CHEAP_METRICS + (MODEL_METRICS if scorer else ())), structure_image,
                 blend=True, batch_size=int(spec.batch_size))


def sweep_study(manager, spec: SweepSpec, base: VLRequest, references: list, store: str | Path,
                structure_image=None, name: str = "sweep") -> Study:
    """The checked study of a sweep (its references stored, a drawn seed drawn once)."""
    spec.axes()  # the spec's own errors first
    if not references:
        raise ValueError("references: no reference image: a comparison sweep conditions on one.")
    base = resolve_seed(validate(base, img2img=base.strength < 1.0, policy=manager.policy))
    refs = store_references(references, store)
    structure = store_references([structure_image], store)[0].path if structure_image is not None else ""
    study = to_study(spec, base, refs, structure, manager.scorer() is not None, name)
    study.check(manager.policy)
    return study


def sweep_cells(study: Study, spec: SweepSpec, found: dict, images: dict | None = None) -> list[SweepCell]:
    """The finished cells of a sweep's study folder (`found`: rows by cell), in cell order; their
    images from `images` (cell -> result or image) or else read from the folder."""
    names = {AXES[a] or "route": a for a, _ in spec.axes()}
    cells = []
    for cell in study.cells():
        if cell.index in found:
            got = (images or {}).get(cell.index)
            result = got if isinstance(got, GenerationResult) else None
            image = result.image if result else got
            cells.append(SweepCell(cell.index, {names[k]: v for k, v in cell.coords.items()}, cell.request,
                                   cell.route, found[cell.index], image, result))
    return cells


def sweep_counts(cells: int, per_process: list[dict], batch_size: int) -> dict:
    """A sweep's counts from its processes' run counts: what the caches ran vs the distinct keys
    needed, the VL loads and the model loading time (apart from any cell's)."""
    counts = {"cells": cells, "finished": sum(c["finished"] for c in per_process), "batch_size": batch_size,
              "processes": len(per_process),
              **{k: sum(c.get(k, 0) for c in per_process) for k in ("extractions_run", "encodes_run", "vl_loads")},
              "load_seconds": round(sum(sum(c["load_seconds"].values()) for c in per_process), 4)}
    if len(per_process) == 1:
        counts.update({k: per_process[0].get(k, 0) for k in ("distinct_extractions", "distinct_texts")})
    else:
        counts["per_process"] = per_process
    return counts


def save_sweep(sweep: SweepResult, folder: str | Path) -> dict:
    """The sweep's table (sweep.csv, sweep.json) and grids (grids/sweep-NN.png: one per Z value,
    the axes alone, as the tab shows them; grids/diff-NN.png: the difference maps) beside the
    study's files; returns every file's path."""
    folder = Path(folder)
    (folder / "sweep.csv").write_text(sweep.table_csv(), encoding="utf-8")
    (folder / "sweep.json").write_text(sweep.table_json(), encoding="utf-8")
    (folder / "grids").mkdir(exist_ok=True)
    grids = []
    for kind, images in (("sweep", sweep.grids()), ("diff", sweep.grids(diff=True))):
        for i, grid in enumerate(images):
            path = folder / "grids" / f"{kind}-{i:02d}.png"
            grid.save(path)
            grids.append(str(path))
    return {"folder": str(folder), "grids": grids,
            "cells": [str(folder / cell_name(c.index)) for c in sweep.cells],
            "csv": str(folder / "sweep.csv"), "json": str(folder / "sweep.json")}


def close_sweep(folder: str | Path, spec: SweepSpec, per_process: list[dict], finished: bool = False,
                images: dict | None = None, stopped: bool = False) -> SweepResult:
    """Finish a sweep's study folder (metadata, summary, grids; status `incomplete` when cells are
    missing) unless it is `finished` already, and write the sweep's table and grids."""
    folder = Path(folder)
    study = Study.from_dict(read_info(folder)["study"])
    if not finished:
        # no plots: they take longer than a small sweep's cells; `llm-dit study plot DIR` draws them,
        # and the Studies tab plots from summary.csv
        finish(folder, study, {"processes": len(per_process), "per_process": per_process}, plots=False)
    found = study_rows(folder)
    cells = sweep_cells(study, spec, found, images)
    for cell in cells:
        if cell.image is None:
            cell.image = Image.open(folder / cell_name(cell.index)).convert("RGB")
    caption = next((c.row.get("caption") for c in cells if c.row.get("caption")), None)
    sweep = SweepResult(spec.axes(), cells, sweep_counts(len(study.cells()), per_process, study.batch_size),
                        caption, stopped, int(spec.diff_base))
    sweep.outputs = save_sweep(sweep, folder)
    return sweep


def iter_sweep(manager, spec: SweepSpec, base: VLRequest, references: list, folder: str | Path,
               structure_image=None, should_stop=None, session: str = ""):
    """Run a sweep into a new study `folder` (its uploaded references stored beside it, under
    `references/`), yielding the sweep after each finished cell (or batch), then once more when the
    folder is finished (grids, tables: `outputs`). Stopping (`should_stop()` true) keeps what was
    finished; a closed generator leaves the folder to `close_sweep` or `llm-dit study resume`."""
    folder = Path(folder)
    study = sweep_study(manager, spec, base, references, folder.parent / "references", structure_image)
    create(manager, study, folder, session)
    axes, found, images = spec.axes(), {}, {}
    sweep = SweepResult(axes, [], {"cells": len(study.cells()), "finished": 0}, diff_base=int(spec.diff_base))
    run = run_cells(manager, study, folder, should_stop=should_stop)
    while True:
        try:
            cell, row, result = next(run)
        except StopIteration as stop:
            counts = stop.value
            break
        found[cell.index], images[cell.index] = row, result
        sweep.cells = sweep_cells(study, spec, found, images)
        sweep.caption = sweep.caption or result.metadata.get("caption")
        sweep.counts = {"cells": len(study.cells()), "finished": len(found)}
        yield sweep
    yield close_sweep(folder, spec, [counts], images=images, stopped=len(found) < len(study.cells()))


def run_sweep(manager, spec: SweepSpec, base: VLRequest, references: list, folder: str | Path,
              structure_image=None, should_stop=None) -> SweepResult:
    """Run the whole sweep (or until `should_stop()`) into `folder`; the finished sweep."""
    sweep = None
    for sweep in iter_sweep(manager, spec, base, references, folder, structure_image, should_stop):
        pass
    return sweep


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

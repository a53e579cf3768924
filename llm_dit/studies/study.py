"""A study is data: references × axes × seeds over one base request, read from a TOML file.

```toml
name = "style transfer"
references = "refs"            # a folder (every image in it, sorted) or a list of files
seeds = [1, 2, 3]              # replicates: aggregated in summary.csv (without `seeds`, `seed` may be an axis)
blend = false                  # optional: true, the references are one set blended in every cell
batch_size = 1                 # optional: cells per pipeline call where they can share one
control_image = "edges.png"    # optional: the ControlNet's layout (--controlnet-path) for every cell;
                               # then controlnet_conditioning_scale, control_guidance_start/end are axes
mask_image = "mask.png"        # optional: inpaint (cells at strength < 1: white redrawn, black kept)
metrics = ["palette_distance", "ssim"]   # optional; style/prompt similarity need --metrics-model
[axes]                         # any request field (or `route`): its values, checked before any cell runs
alpha = [0.0, 0.3, 0.6]
strength = [0.7, 0.9]
[base]                         # the fixed request fields
prompt = "a house by the sea"
```

Relative paths are read from the study file's folder. Every field name and value is checked
against the request's declarations (`core/request.py`), and every cell's request is validated,
before anything loads.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..core.images import load_image
from ..pipelines.control import check_inputs
from .routes import ROUTES, caption_request
from ..core.request import SEED_MAX, RewriteRequest, VLRequest, check_field, validate, validate_rewrite

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CHEAP_METRICS = ("palette_distance", "ssim")
MODEL_METRICS = ("style_similarity", "prompt_similarity")  # --metrics-model (CLIP / SigLIP)
KEYS = ("name", "description", "references", "seeds", "axes", "base", "metrics", "structure_image", "captioner",
        "blend", "batch_size", "control_image", "mask_image")
CONTROL_SETTINGS = ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                    "control_preprocess")  # what a control image makes matter
REQUEST_FIELDS = {f.name: f for f in fields(VLRequest)}


@dataclass
class Reference:
    name: str
    path: str
    sha256: str


@dataclass
class Cell:
    index: int
    reference: Reference
    coords: dict  # axis -> value
    seed: int
    request: VLRequest
    route: str = "embedding"


@dataclass
class Study:
    name: str
    references: list[Reference]
    seeds: list[int]
    axes: list[tuple[str, list]]
    base: dict
    metrics: list[str] = field(default_factory=lambda: list(CHEAP_METRICS))
    structure_image: str = ""
    description: str = ""
    captioner: dict = field(default_factory=dict)  # the text route's rewrite backend (RewriteRequest fields)
    blend: bool = False  # the references are one set, blended in every cell (a sweep's)
    batch_size: int = 1  # cells per pipeline call where they can share one (1: each cell bit-reproducible)
    control_image: Reference | None = None  # every cell's ControlNet layout (its file, hashed)
    mask_image: Reference | None = None  # every cell's inpainting mask (its file, hashed)

    def to_dict(self) -> dict:
        """The study as run: resolved paths, hashes and seeds (what `from_dict` reads back)."""
        return {"name": self.name, "description": self.description,
                "references": [vars(r) for r in self.references], "seeds": self.seeds,
                "axes": {a: v for a, v in self.axes}, "base": self.base, "metrics": self.metrics,
                "structure_image": self.structure_image, "captioner": self.captioner, "blend": self.blend,
                "batch_size": self.batch_size, "control_image": self.control_image and vars(self.control_image),
                "mask_image": self.mask_image and vars(self.mask_image)}

    @classmethod
    def from_dict(cls, data: dict) -> "Study":
        return cls(data["name"], [Reference(**r) for r in data["references"]], list(data["seeds"]),
                   list(data["axes"].items()), dict(data["base"]), list(data["metrics"]),
                   data.get("structure_image", ""), data.get("description", ""), dict(data.get("captioner", {})),
                   bool(data.get("blend", False)), int(data.get("batch_size", 1)),
                   *(Reference(**data[k]) if data.get(k) else None for k in ("control_image", "mask_image")))

    def base_request(self) -> VLRequest:
        return VLRequest(**self.base)

    def reference_sets(self) -> list[Reference]:
        """What a cell conditions on: each reference, or (`blend`) all of them as one set, named
        after its files and hashed over theirs."""
        if not self.blend:
            return self.references
        digest = hashlib.sha256("".join(r.sha256 for r in self.references).encode()).hexdigest()
        return [Reference(" + ".join(r.name for r in self.references), "", digest)]

    def members(self, reference: Reference) -> list[Reference]:
        """The reference files of a cell's reference (set)."""
        return self.references if self.blend else [reference]

    def cells(self) -> list[Cell]:
        """Every cell: reference outermost, then the axes (the first axis fastest), seeds innermost
        (a `seed` axis: its value is the cell's one seed)."""
        names = [a for a, _ in self.axes]
        combos = list(itertools.product(*[v for _, v in reversed(self.axes)]))
        cells = []
        for reference in self.reference_sets():
            for combo in combos:
                coords = dict(zip(reversed(names), combo))
                coords = {a: coords[a] for a in names}
                fixed = {k: v for k, v in coords.items() if k != "route"}
                if "vl_text" in fixed:  # VL reads the text on the axis, not the prompt (as in a sweep)
                    fixed["vl_use_prompt"] = False
                for seed in [coords["seed"]] if "seed" in coords else self.seeds:
                    request = VLRequest(**{**self.base, **fixed, "seed": seed})
                    cells.append(Cell(len(cells), reference, coords, seed, request, coords.get("route", "embedding")))
        return cells

    def check(self, policy=None) -> list[Cell]:
        """Validate every cell's request, and the captioner when a cell takes the text route
        (before any runs); the cells."""
        cells = self.cells()
        changed = [a for a, _ in self.axes if a in CONTROL_SETTINGS] + [
            k for k in CONTROL_SETTINGS if k in self.base and self.base[k] != REQUEST_FIELDS[k].default]
        if changed and self.control_image is None:
            raise ValueError(f"study {self.name!r}: {changed[0]} does nothing without a control image: give "
                             f'control_image = "layout.png" (and start with --controlnet-path), or drop it.')
        text = next((c for c in cells if c.route == "text"), None)
        if text is not None:
            try:
                validate_rewrite(caption_request(text.request, self.captioner), has_image=True, policy=policy)
            except (ValueError, TypeError) as err:
                raise ValueError(f"study {self.name!r}, captioner: {err}") from None
        for cell in cells:
            try:
                validate(cell.request, img2img=cell.request.strength < 1.0, policy=policy)
                check_inputs(cell.request.strength < 1.0, self.control_image, self.mask_image)
            except ValueError as err:
                where = ", ".join(f"{k}={v!r}" for k, v in cell.coords.items())
                raise ValueError(f"study {self.name!r}, cell {cell.index} ({where or 'base'}): {err}") from None
        return cells


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _references(value, root: Path) -> list[Reference]:
    if isinstance(value, str):
        folder = (root / value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"references={value!r} is not a folder (looked in {folder}): give a folder of "
                             f"images or a list of files.")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise ValueError(f"references={value!r}: the folder has no images ({', '.join(IMAGE_SUFFIXES)}).")
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        paths = [(root / v).expanduser() for v in value]
    else:
        raise ValueError(f"references={value!r}: give a folder (text) or a non-empty list of image files "
                         f"(or --references on the command line).")
    refs = []
    for i, path in enumerate(paths):
        if not path.is_file():
            raise ValueError(f"references[{i}]={str(path)!r} is not a file: check the path (relative paths "
                             f"start at the study file's folder).")
        load_image(str(path), field=f"references[{i}]")  # refuses a bad image before any cell runs
        refs.append(Reference(path.name, str(path.resolve()), file_sha256(path)))
    if len({r.name for r in refs}) != len(refs):
        raise ValueError("references: two files share a name: the name labels a reference, rename one.")
    return refs


def _axis(name: str, values, seeds) -> list:
    if name == "seed" and seeds is not None:
        raise ValueError("axes.seed: seeds are replicates, listed in `seeds = [...]`: drop `seeds` to put the seed "
                         "on an axis (one seed per cell, as a sweep does).")
    if name != "route" and name not in REQUEST_FIELDS:
        raise ValueError(f"axes.{name} is not a request field: use one of route, "
                         f"{', '.join(n for n in REQUEST_FIELDS if n != 'seed')}.")
    if not isinstance(values, list) or not values:
        raise ValueError(f"axes.{name}={values!r}: give a non-empty list of values, e.g. {name} = [0.3, 0.6].")
    checked = []
    for value in values:
        if name == "route":
            if value not in ROUTES:
                raise ValueError(f"axes.route: {value!r} is not one of {', '.join(ROUTES)}.")
            checked.append(value)
            continue
        try:
            checked.append(check_field(name, value))
        except ValueError as err:
            raise ValueError(f"axes.{name}: {err}") from None
    if len({repr(v) for v in checked}) != len(checked):
        raise ValueError(f"axes.{name} repeats a value: {values}.")
    return checked


def _seeds(value) -> list[int]:
    if value is None:
        value = [0]
    if not isinstance(value, list) or not value or any(isinstance(s, bool) or not isinstance(s, int) for s in value):
        raise ValueError(f"seeds={value!r}: give a non-empty list of whole numbers, e.g. seeds = [1, 2, 3] "
                         f"(-1 draws one).")
    seeds = [random.randrange(2**32) if s == -1 else s for s in value]
    for s in seeds:
        if not 0 <= s <= SEED_MAX:
            raise ValueError(f"seeds: {s} is out of range: use 0 to 2**64-1, or -1 to draw one.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={value!r} repeats a seed: each replicate needs its own.")
    return seeds


def parse_study(data: dict, root: Path, name: str = "study", scorer: bool = False) -> Study:
    """A checked Study from parsed TOML (paths relative to `root`). `scorer`: --metrics-model is set."""
    unknown = set(data) - set(KEYS)
    if unknown:
        raise ValueError(f"study: unknown key(s) {sorted(unknown)}: use {', '.join(KEYS)}.")
    base = dict(data.get("base", {}))
    for key, value in base.items():
        if key == "seed":
            raise ValueError("base.seed: seeds are replicates: list them in `seeds = [...]`.")
        if key not in REQUEST_FIELDS:
            raise ValueError(f"base.{key} is not a request field: use one of {', '.join(REQUEST_FIELDS)}.")
        try:
            base[key] = check_field(key, value)
        except ValueError as err:
            raise ValueError(f"base.{err}") from None
    axes = [(a, _axis(a, v, data.get("seeds"))) for a, v in dict(data.get("axes", {})).items()]
    for axis, _ in axes:
        if axis in base:
            raise ValueError(f"{axis} is both in base and in axes: keep it in one.")
    metrics = list(data.get("metrics", CHEAP_METRICS + (MODEL_METRICS if scorer else ())))
    for metric in metrics:
        if metric not in CHEAP_METRICS + MODEL_METRICS:
            raise ValueError(f"metrics: {metric!r} is unknown: use {', '.join(CHEAP_METRICS + MODEL_METRICS)}.")
        if metric in MODEL_METRICS and not scorer:
            raise ValueError(f"metrics: {metric!r} needs a scoring model: start with --metrics-model "
                             f"(a CLIP or SigLIP folder or hub id), or drop it.")
    structure = data.get("structure_image", "")
    if structure:
        path = (root / structure).expanduser()
        load_image(str(path), field="structure_image")
        structure = str(path.resolve())
    captioner = data.get("captioner", {})
    if not isinstance(captioner, dict) or set(captioner) - {f.name for f in fields(RewriteRequest)}:
        raise ValueError(f"captioner={captioner!r}: give a table of rewrite fields ({', '.join(f.name for f in fields(RewriteRequest))}), "
                         f'e.g. captioner = {{ backend = "openai", server = "NAME", model = "MODEL" }}.')
    seeds = dict(axes).get("seed") or _seeds(data.get("seeds"))
    blend, batch_size = data.get("blend", False), data.get("batch_size", 1)
    if not isinstance(blend, bool):
        raise ValueError(f"blend={blend!r}: give true (the references are one set, blended in every cell) or false.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 16:
        raise ValueError(f"batch_size={batch_size!r} is out of range: use a whole number from 1 to 16.")
    return Study(str(data.get("name", name)), _references(data.get("references"), root), seeds,
                 axes, base, metrics, structure, str(data.get("description", "")), dict(captioner), blend, batch_size,
                 *(_file(k, data[k], root) if data.get(k) else None for k in ("control_image", "mask_image")))


def _file(key: str, value, root: Path) -> Reference:
    """A study's control image or mask: its file (relative to the study file's folder), hashed."""
    path = (root / str(value)).expanduser()
    if not isinstance(value, str) or not path.is_file():
        raise ValueError(f"{key}={value!r} is not a file: give an image file (relative paths start at the study "
                         f"file's folder).")
    load_image(str(path), field=key)  # refuses a bad image before any cell runs
    return Reference(path.name, str(path.resolve()), file_sha256(path))


def load_study(path: str | Path, scorer: bool = False, references: list[str] | None = None,
               base: dict | None = None) -> Study:
    """Read and check a study file (TOML); `references` (a folder, or files) and `base` fields, when
    given, take the place of the file's (e.g. a study preset run over your own images)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"study file {str(path)!r} cannot be read ({err.strerror}): check the path.") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"study file {path}: {err}") from None
    if references:
        paths = [str(Path(r).resolve()) for r in references]
        data["references"] = paths[0] if len(paths) == 1 and Path(paths[0]).is_dir() else paths
    if base:
        data["base"] = {**data.get("base", {}), **base}
    return parse_study(data, path.parent, path.stem, scorer)

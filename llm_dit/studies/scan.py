"""The layer scan over many references (`llm-dit scan`): one study-like folder.

```
DIR/scan.json    the references (name, sha256), the extraction settings, models, versions, device
DIR/scan.csv     one row per reference × layer × token type (the layer scan's columns, `reference`
                 and `reference_sha256` first)
DIR/plots/*.png  std correlation, outlier dims and both outlier ratios against the layer, one line
                 per reference, for image and text tokens
```
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from ..conditioning import layerscan
from ..core.request import VLRequest
from ..pipelines.recipe import extraction_params
from .runner import _environment, _write_json
from .study import IMAGE_SUFFIXES, Reference, file_sha256

PLOTTED = ("std_correlation", "outlier_dims", "outlier_ratio", "std_ratio_raw")


def references_of(paths: list[str]) -> list[Reference]:
    """Files, and every image of each folder (sorted), as labelled references."""
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"--reference {raw!r} is neither an image file nor a folder: check the path.")
    if not files:
        raise ValueError(f"--reference {paths!r}: no images found ({', '.join(IMAGE_SUFFIXES)}).")
    return [Reference(p.name, str(p.resolve()), file_sha256(p)) for p in files]


def run_scan(manager, request: VLRequest, paths: list[str], folder: str | Path) -> dict:
    """Scan every reference (one VL forward each, in one VL session) into a new folder."""
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"output folder {str(folder)!r} already exists: choose another --output-dir.")
    references = references_of(paths)
    params = extraction_params(request)
    rows = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with manager.vl_session():
        for ref in references:
            for row in layerscan.scan(manager, ref.path, params, request.hidden_layer, request.outlier_threshold):
                rows.append({"reference": ref.name, "reference_sha256": ref.sha256, **row})
    folder.mkdir(parents=True)
    with open(folder / "scan.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["reference", "reference_sha256", *layerscan.COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    plots = plot_scan(rows, folder / "plots")
    best = {ref.name: layerscan.best_layer([r for r in rows if r["reference"] == ref.name]) for ref in references}
    _write_json(folder / "scan.json", {
        "references": [vars(r) for r in references], "text_layer": request.hidden_layer,
        "outlier_threshold": request.outlier_threshold, "vl_text": params.text, "think_block": params.think_block,
        "best_layer": best, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_environment(manager)})
    return {"folder": str(folder), "csv": str(folder / "scan.csv"), "plots": [str(p) for p in plots],
            "best_layer": best}


def plot_scan(rows: list[dict], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for tokens in ("image", "text"):
        chosen = [r for r in rows if r["tokens"] == tokens]
        if not chosen:
            continue
        for value in PLOTTED:
            fig = Figure(figsize=(6.4, 4.2), dpi=100)
            ax = fig.add_subplot()
            for name in dict.fromkeys(r["reference"] for r in chosen):
                mine = sorted((r for r in chosen if r["reference"] == name), key=lambda r: r["layer"])
                ax.plot([r["layer"] for r in mine], [r[value] for r in mine], marker="o", label=name)
            ax.set_xlabel("VL hidden layer")
            ax.set_ylabel(value)
            ax.set_title(f"{value}, {tokens} tokens")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"{value}-{tokens}.png"
            fig.savefig(path)
            written.append(path)
    return written

"""summary.csv (one row per configuration, mean and sd over the seeds) and its plots.

The columns are `reference`, one per axis, `n` (the seeds aggregated), then `<value>_mean` and
`<value>_sd` for the VL share, every score and the generation time. The plots are read from
summary.csv alone (`llm-dit study plot DIR`): for each value against each numeric axis, one line per
value of the other configuration columns, error bars one sample standard deviation over the seeds.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

VALUES = ("vl_share", "palette_distance", "ssim", "style_similarity", "prompt_similarity", "generate_seconds")


def summarize(rows: list[dict], study) -> list[dict]:
    """One row per (reference, axis values), aggregated over the seeds, in cell order."""
    axes = [a for a, _ in study.axes]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["reference"], *(repr(row[a]) for a in axes)), []).append(row)
    table = []
    for members in groups.values():
        first = members[0]
        out = {"reference": first["reference"], **{a: first[a] for a in axes}, "n": len(members)}
        for name in VALUES:
            values = [m[name] for m in members if isinstance(m.get(name), (int, float))]
            if values:
                out[f"{name}_mean"] = round(statistics.fmean(values), 6)
                out[f"{name}_sd"] = round(statistics.stdev(values), 6) if len(values) > 1 else 0.0
        table.append(out)
    return table


def write_summary(table: list[dict], path: Path) -> None:
    names = list(dict.fromkeys(k for row in table for k in row))
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(path)


def read_summary(path: str | Path) -> tuple[list[str], list[str], list[dict]]:
    """(configuration columns, value names, rows) of a summary.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror}): give a study folder with its summary.csv.") from None
    if "n" not in columns:
        raise ValueError(f"{path} is not a study summary (no `n` column).")
    config = columns[: columns.index("n")]
    values = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    return config, values, rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def numeric_axes(config: list[str], rows: list[dict]) -> list[str]:
    """Configuration columns whose values are all numbers, with at least two distinct values."""
    return [c for c in config if c != "reference" and all(_number(r[c]) is not None for r in rows)
            and len({r[c] for r in rows}) > 1]


def figure(config: list[str], rows: list[dict], value: str, axis: str):
    """A matplotlib figure: `value` against `axis`, one line per value of the other columns."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot()
    others = [c for c in config if c != axis]
    lines: dict[tuple, list[dict]] = {}
    for row in rows:
        if _number(row.get(f"{value}_mean")) is not None:
            lines.setdefault(tuple(row[c] for c in others), []).append(row)
    for key, members in lines.items():
        members.sort(key=lambda r: float(r[axis]))
        label = ", ".join(f"{c}={v}" for c, v in zip(others, key)) or value
        ax.errorbar([float(r[axis]) for r in members], [float(r[f"{value}_mean"]) for r in members],
                    yerr=[_number(r.get(f"{value}_sd")) or 0.0 for r in members], marker="o", capsize=3, label=label)
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{value} (mean ± sd over seeds)")
    ax.set_title(f"{value} vs {axis}")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_summary(summary: str | Path, out: str | Path) -> list[Path]:
    """Every (value, numeric axis) plot of a summary.csv as PNG in `out`; the paths."""
    config, values, rows = read_summary(summary)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for axis in numeric_axes(config, rows):
        for value in values:
            path = out / f"{value}-vs-{axis}.png"
            figure(config, rows, value, axis).savefig(path)
            written.append(path)
    return written

"""Parameter presets as data (TOML in `presets/`), checked against the request's fields."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .request import VLRequest, check_number

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


def load_presets(path: Path = PRESETS_DIR / "generation.toml") -> dict[str, dict]:
    """{name: {"description": str, "values": {field: value}}}; a bad file names the fault."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"presets file {path}: {err}") from None
    names = {f.name for f in fields(VLRequest)}
    presets = {}
    for name, table in data.items():
        values = {k: v for k, v in table.items() if k != "description"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"preset {name!r} in {path}: unknown field(s) {unknown}: use request fields.")
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    check_number(key, value)
                except ValueError as err:
                    raise ValueError(f"preset {name!r} in {path}: {err}") from None
        presets[name] = {"description": table.get("description", ""), "values": values}
    return presets


@dataclass(frozen=True)
class Resolution:
    tier: int
    width: int
    height: int
    ratio: str

    @property
    def label(self) -> str:
        return f"{self.width}×{self.height} ({self.ratio}) · {self.tier}"


def load_resolutions(path: Path = PRESETS_DIR / "resolutions.toml") -> list[Resolution]:
    """The resolution presets (tiers × aspect ratios); a size that is not a multiple of 16 is refused."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    sizes = [Resolution(t["base"], s["width"], s["height"], s["ratio"]) for t in data["tier"] for s in t["sizes"]]
    for r in sizes:
        if r.width % 16 or r.height % 16:
            raise ValueError(f"resolution preset {r.width}x{r.height} in {path}: sides must be multiples of 16.")
    return sizes

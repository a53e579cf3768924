"""Parameters from a PNG: this app's JSON chunk, or AUTOMATIC1111's `parameters` text.

Every value is checked against the request's declared fields and ranges; what cannot be used is
listed (unknown keys, out-of-range values, other tools' metadata), never silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields

from .images import A1111_KEY, JSON_KEY, read_png_text
from .request import GenerationRequest, VLRequest, check_field, to_number

# A1111 key -> (request field, type)
A1111_FIELDS = {"Steps": ("num_inference_steps", int), "CFG scale": ("guidance_scale", float),
                "Seed": ("seed", int), "Denoising strength": ("strength", float),
                "Schedule shift": ("shift", float)}
OTHER_TOOLS = {"prompt": "ComfyUI", "workflow": "ComfyUI", "Dream": "InvokeAI", "invokeai_metadata": "InvokeAI",
               "sd-metadata": "InvokeAI", "Comment": "NovelAI"}


@dataclass
class Parameters:
    mode: str  # txt2img / img2img / vl
    values: dict  # usable request fields
    source: str  # "llm_dit" or "a1111"
    unknown: dict = field(default_factory=dict)  # keys that are not request fields
    problems: list = field(default_factory=list)  # values that were present but could not be used
    references: list = field(default_factory=list)  # a VL image's references: the sha256 of each
    reference_sizes: list = field(default_factory=list)  # and its (width, height), or None

    def request(self):
        cls = VLRequest if self.mode == "vl" else GenerationRequest
        return cls.from_dict(self.values)[0]

    def report(self) -> str:
        lines = [f"Read {len(self.values)} parameter(s) from the {self.source} metadata ({self.mode})."]
        if self.unknown:
            lines.append("Not used (not parameters of this app): " +
                         ", ".join(f"{k}: {v}" for k, v in self.unknown.items()))
        lines += [f"Could not use {p}" for p in self.problems]
        return "\n".join(lines)


def _sort(values: dict, result: Parameters) -> Parameters:
    names = {f.name for f in fields(VLRequest)}
    for key, value in values.items():
        if key not in names:
            result.unknown[key] = value
            continue
        try:
            result.values[key] = check_field(key, value)
        except ValueError as err:
            result.problems.append(str(err))
    return result


def _parse_a1111(text: str) -> tuple[dict, dict]:
    lines = text.strip().split("\n")
    settings_line = lines.pop() if lines and re.match(r"^\s*Steps:", lines[-1]) else ""
    negative = ""
    for i, line in enumerate(lines):
        if line.startswith("Negative prompt:"):
            negative = "\n".join(lines[i:])[len("Negative prompt:"):].strip()
            lines = lines[:i]
            break
    values, unknown = {"prompt": "\n".join(lines).strip(), "negative_prompt": negative}, {}
    for key, raw in re.findall(r"\s*([^:,]+):\s*(\"[^\"]*\"|[^,]+)", settings_line):
        key, raw = key.strip(), raw.strip()
        if key == "Size" and re.fullmatch(r"\d+x\d+", raw):
            values["width"], values["height"] = (int(v) for v in raw.split("x"))
        elif key in A1111_FIELDS:
            name, kind = A1111_FIELDS[key]
            try:
                values[name] = to_number(raw, kind)
            except ValueError:
                unknown[key] = raw
        else:
            unknown[key] = raw
    return values, unknown


def read_parameters(source) -> Parameters:
    """Parameters from a PNG path or image; ValueError when it has none this app can read."""
    try:
        text = read_png_text(source)
    except Exception as err:  # noqa: BLE001 - not a PNG, unreadable
        raise ValueError(f"image: not a readable PNG ({type(err).__name__}): parameters live in PNG text chunks.") from None
    if JSON_KEY in text:
        try:
            metadata = json.loads(text[JSON_KEY])
            values = dict(metadata["request"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"image: its '{JSON_KEY}' chunk is damaged ({type(err).__name__}).") from None
        refs = (metadata.get("vl") or {}).get("references") or [] if isinstance(metadata, dict) else []
        refs = [r for r in refs if isinstance(r, dict) and isinstance(r.get("sha256"), str)]
        sizes = [tuple(r["size"]) if isinstance(r.get("size"), list) and len(r["size"]) == 2 else None for r in refs]
        return _sort(values, Parameters(metadata.get("mode", "txt2img"), {}, JSON_KEY,
                                        references=[r["sha256"] for r in refs], reference_sizes=sizes))
    if A1111_KEY in text:
        values, unknown = _parse_a1111(text[A1111_KEY])
        mode = "img2img" if "strength" in values else "txt2img"
        result = _sort(values, Parameters(mode, {}, "a1111", dict(unknown)))
        return result
    others = sorted({OTHER_TOOLS[k] for k in text if k in OTHER_TOOLS})
    if others:
        raise ValueError(f"image: it carries {' and '.join(others)} metadata ({', '.join(sorted(text))}), which "
                         f"this app cannot map: only A1111 'parameters' and this app's '{JSON_KEY}' chunks are read.")
    raise ValueError(f"image: the PNG has no generation metadata (no '{JSON_KEY}' or '{A1111_KEY}' text chunk).")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FIND_LIMIT = 2000  # image files looked at, newest first: a click decodes no more than these


def find_images(hashes: list[str], roots: list, sizes: list | None = None, limit: int = FIND_LIMIT,
                max_pixels: int = 0) -> dict:
    """sha256 -> a file under `roots` (newest first) whose decoded pixels have it, as the VL
    metadata records a reference (`image_sha256(load_image(file))`); hashes not found are absent.
    With `sizes` (each reference's recorded (width, height), or None), only files of those sizes
    are decoded (the header says it: the others cost no decoding). A file over `max_pixels` (when
    set; the budget of one image input) is never decoded: the metadata is a client's to write."""
    from pathlib import Path

    from PIL import Image

    from .images import image_sha256, load_image

    wanted, found = set(hashes), {}
    shapes = None if not sizes or None in sizes else {tuple(s) for s in sizes} | {tuple(s)[::-1] for s in sizes}
    files = [p for root in roots if Path(root).is_dir() for p in Path(root).rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]:
        if not wanted - set(found):
            break
        try:
            with Image.open(path) as header:
                if (shapes is not None and header.size not in shapes) or (
                        max_pixels and header.width * header.height > max_pixels):
                    continue
        except Exception:  # noqa: BLE001 - not an image PIL reads
            continue
        try:
            digest = image_sha256(load_image(str(path)))
        except ValueError:  # not an image we can open: not a reference either
            continue
        if digest in wanted:
            found.setdefault(digest, path)
    return found


def request_from_png(source):
    """The request that made a PNG (GenerationRequest, or VLRequest for VL images)."""
    return read_parameters(source).request()

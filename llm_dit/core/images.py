"""Safe image loading and PNG metadata (A1111 `parameters` text + our full JSON)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
JSON_KEY = "llm_dit"  # PNG text chunk holding the full metadata as JSON
A1111_KEY = "parameters"  # PNG text chunk in AUTOMATIC1111's format


class UploadedFile(str):
    """A file path (a str) that also remembers the name its sender gave it, for messages."""

    def __new__(cls, path, original_name=None):
        value = super().__new__(cls, path)
        value.original_name = original_name or Path(path).name
        return value


def display_name(source) -> str:
    """How messages name an input file: an upload's original name, else the file's base name;
    never a server path."""
    name = getattr(source, "original_name", None) or getattr(source, "orig_name", None)
    return str(name) if name else os.path.basename(str(getattr(source, "path", source)))


def _open(source, field: str) -> Image.Image:
    """The image in `source` opened lazily (its header read, no pixels decoded), or a ValueError."""
    label = display_name(source) if isinstance(source, (str, os.PathLike)) else "<bytes>"
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        return Image.open(data, formats=FORMATS)
    except FileNotFoundError:
        raise ValueError(f"{field}: file {label!s} does not exist: upload it again or check the path.") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"{field}: {label!s} is too large to open safely ({err}): downscale it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"{field}: {label!s} is not a readable image ({type(err).__name__}): "
            f"use a {', '.join(FORMATS)} file."
        ) from None


def image_size(source, field: str = "image", budgets=None) -> tuple[int, int]:
    """(width, height) of an image input from its header alone, before any pixel is decoded; a
    ValueError naming `field` when it is no image or is over `budgets.image_pixels`."""
    if source is None:
        raise ValueError(f"{field}: no image was given: upload or pass an image file.")
    if isinstance(source, Image.Image):
        size = source.size
    else:
        with _open(source, field) as image:
            size = image.size
    if budgets is not None:
        budgets.check_image(field, display_name(source) if isinstance(source, (str, os.PathLike)) else "the image",
                            *size)
    return size


def load_image(source, field: str = "image") -> Image.Image:
    """An RGB image from a path, bytes or PIL image, or a ValueError that names `field`.

    Applies EXIF orientation, takes the first frame of animations, composites transparency on
    white, and converts 16-bit, CMYK and palette images properly.
    """
    if source is None:
        raise ValueError(f"{field}: no image was given: upload or pass an image file.")
    if isinstance(source, Image.Image):
        return to_rgb(source)
    image = _open(source, field)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        label = display_name(source) if isinstance(source, (str, os.PathLike)) else "<bytes>"
        raise ValueError(f"{field}: {label!s} is not a readable image ({type(err).__name__}): "
                         f"use a {', '.join(FORMATS)} file.") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)  # a copy of the (first) frame, upright
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _deep_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _deep_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit, keeping the range instead of clipping it
    (in float32: 4 bytes a pixel, the size of the decoded 32-bit modes themselves)."""
    values = np.array(image, dtype=np.float32)  # a writable copy
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F":
        peak = 1.0 if top <= 1.0 else top
    else:
        peak = 65535.0 if top <= 65535 else top
    values *= 255.0 / max(peak, 1e-12)  # in place: no second copy of the pixels
    values += 0.5
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8), "L")


def image_sha256(image: Image.Image) -> str:
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def save_png(image: Image.Image, path: str | Path, parameters: str, metadata: dict) -> Path:
    """Write the PNG with both metadata chunks (call it through `OutputFolder.write` for an
    atomic write into the output folder)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, parameters)
    info.add_text(JSON_KEY, json.dumps(metadata, ensure_ascii=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


TEXT_AFTER_PIXELS_MAX = 4096 * 4096  # a PNG whose text may sit after its pixels is decoded only up to this size


def read_png_text(source) -> dict:
    """The PNG's text chunks (empty when it has none). Those before the pixel data (where Pillow,
    A1111 and ComfyUI write them) come from the header read; Pillow finds later ones only by
    decoding the image, done only for images up to TEXT_AFTER_PIXELS_MAX pixels (no bomb)."""
    if isinstance(source, Image.Image):
        return dict(getattr(source, "text", {}) or {})
    with Image.open(source, formats=("PNG",)) as image:
        early = {k: v for k, v in image.info.items() if isinstance(v, str)}
        # an animated PNG's late chunks come after its last frame: Pillow decodes every frame to
        # reach them (300 frames of 4096² = 23 s of CPU), so only the header's chunks are read
        if early or image.width * image.height > TEXT_AFTER_PIXELS_MAX or getattr(image, "is_animated", False):
            return early
        return dict(getattr(image, "text", {}) or {})

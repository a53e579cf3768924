"""Safe image loading and PNG metadata (A1111 `parameters` text + our full JSON)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
JSON_KEY = "llm_dit"  # PNG text chunk holding the full metadata as JSON
A1111_KEY = "parameters"  # PNG text chunk in AUTOMATIC1111's format


def load_image(source, field: str = "image") -> Image.Image:
    """An RGB image from a path, bytes or PIL image, or a ValueError that names `field`.

    Applies EXIF orientation, takes the first frame of animations, composites transparency on
    white, and converts 16-bit, CMYK and palette images properly.
    """
    if source is None:
        raise ValueError(f"{field}: no image was given: upload or pass an image file.")
    if isinstance(source, Image.Image):
        image = source
    else:
        label = source if isinstance(source, (str, os.PathLike)) else "<bytes>"
        try:
            data = io.BytesIO(source) if isinstance(source, bytes) else source
            image = Image.open(data, formats=FORMATS)
            image.load()
        except FileNotFoundError:
            raise ValueError(f"{field}: file {label!s} does not exist: check the path.") from None
        except Image.DecompressionBombError as err:
            raise ValueError(f"{field}: {label!s} is too large to open safely ({err}): downscale it.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ValueError(
                f"{field}: {label!s} is not a readable image ({type(err).__name__}): "
                f"use a {', '.join(FORMATS)} file."
            ) from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        image = image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_sha256(image: Image.Image) -> str:
    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def save_png(image: Image.Image, path: str | Path, parameters: str, metadata: dict) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, parameters)
    info.add_text(JSON_KEY, json.dumps(metadata, ensure_ascii=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_png_text(source) -> dict:
    """The PNG's text chunks (empty when it has none)."""
    image = Image.open(source, formats=("PNG",)) if not isinstance(source, Image.Image) else source
    return dict(getattr(image, "text", {}) or {})

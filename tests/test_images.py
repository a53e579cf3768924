"""Image loading turns every odd input into a plain RGB image, or a clear error."""

import io

import numpy as np
import pytest
from PIL import Image

from llm_dit.core.images import image_sha256, load_image


def _save(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert load_image(_save(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grey_keeps_its_range():
    grey = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert load_image(_save(grey, "PNG")).getpixel((0, 0)) == (128, 128, 128)


def test_32_bit_and_float_images_are_not_black():
    wide = Image.fromarray(np.full((4, 4), 40000, dtype=np.int32))  # mode I, 16-bit range
    assert load_image(wide).getpixel((0, 0)) == (156, 156, 156)
    ramp = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))  # mode F, 0..1
    assert load_image(ramp).getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb():
    image = load_image(_save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert image.mode == "RGB" and image.getpixel((0, 0))[0] > 200


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (8, 4))
    exif = wide.getexif()
    exif[0x0112] = 6  # rotate 90°
    assert load_image(_save(wide, "JPEG", exif=exif)).size == (4, 8)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("P", (4, 4), i) for i in (1, 2)]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).mode == "RGB"


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ValueError, match="too large to open safely"):
        load_image(_save(Image.new("RGB", (16, 16)), "PNG"), field="reference")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ValueError, match=r"image: .*notes.png is not a readable image"):
        load_image(str(tmp_path / "notes.png"))


def test_hash_depends_on_content():
    assert image_sha256(Image.new("RGB", (4, 4), 1)) != image_sha256(Image.new("RGB", (4, 4), 2))
    assert image_sha256(Image.new("RGB", (4, 4), 1)) == image_sha256(Image.new("RGB", (4, 4), 1))

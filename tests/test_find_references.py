"""A VL PNG's references found again by the sha256 it records (PNG info -> VL), and the reference
thumbnails' captions."""

from PIL import Image

from llm_dit.core.images import image_sha256, load_image
from llm_dit.core.pnginfo import find_images, read_parameters
from llm_dit.core.request import VLRequest
from llm_dit.pipelines.recipe import vl_generate
from ui.tabs.vl import reference_thumbs


def test_a_vl_png_records_its_references_and_they_are_found_by_pixels(manager, tmp_path):
    ref = tmp_path / "refs" / "style.png"
    ref.parent.mkdir()
    Image.new("RGB", (64, 64), (40, 90, 200)).save(ref)
    other = tmp_path / "refs" / "other.png"
    Image.new("RGB", (64, 64), (200, 90, 40)).save(other)
    made = vl_generate(manager, VLRequest(prompt="a fox", height=64, width=64, seed=1, alpha=0.5), [str(ref)])
    path = made.save(tmp_path / "out")
    params = read_parameters(path)
    assert params.references == [image_sha256(load_image(str(ref)))] and params.reference_sizes == [(64, 64)]
    copy = tmp_path / "kept" / "renamed.png"  # a copy under another name is found by its pixels
    copy.parent.mkdir()
    copy.write_bytes(ref.read_bytes())
    ref.unlink()
    found = {params.references[0]: copy}
    assert find_images(params.references, [tmp_path / "refs", tmp_path / "kept"], params.reference_sizes) == found
    assert find_images(params.references, [tmp_path / "refs", tmp_path / "kept"]) == found  # no sizes: all decoded
    assert find_images(params.references, [tmp_path / "refs"]) == {}


def test_thumbnail_captions_carry_the_weights(tmp_path):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"r{i}.png"))
        Image.new("RGB", (8, 8)).save(paths[-1])
    assert [c for _, c in reference_thumbs(paths, "1, 0.5")] == ["r0.png · weight 1", "r1.png · weight 0.5"]
    assert [c for _, c in reference_thumbs(paths, "")] == ["r0.png · weight 1", "r1.png · weight 1"]
    assert "weight ?" in reference_thumbs(paths, "1")[0][1]  # one weight for two: said, not guessed
    assert reference_thumbs(None, "") == []


def test_a_reference_over_the_image_budget_is_never_decoded_to_find_it(tmp_path):
    """The recorded sizes are a client's to write: a file over the budget of one image input is
    skipped from its header, even when its size and pixels are the ones asked for."""
    big = tmp_path / "big.png"
    Image.new("RGB", (96, 96), (1, 2, 3)).save(big)
    digest = image_sha256(load_image(str(big)))
    assert find_images([digest], [tmp_path], [(96, 96)]) == {digest: big}
    assert find_images([digest], [tmp_path], [(96, 96)], max_pixels=96 * 96 - 1) == {}
    assert find_images([digest], [tmp_path], None, max_pixels=96 * 96 - 1) == {}


def _late_text(path, key: str, value: str):
    """Append a tEXt chunk after the pixels (just before IEND), where some tools write it."""
    import struct
    import zlib

    data = path.read_bytes()
    body = key.encode() + b"\0" + value.encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + chunk + data[end:])


def test_an_animated_pngs_late_text_is_not_read_by_decoding_every_frame(tmp_path):
    """Pillow reaches an APNG's chunks after the frames only by decoding all of them (300 frames of
    4096² cost 23 s of CPU): only the header's chunks are read. A still image's late text is read."""
    from llm_dit.core.images import read_png_text

    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    animated, still = tmp_path / "anim.png", tmp_path / "still.png"
    frames[0].save(animated, save_all=True, append_images=frames[1:])
    frames[0].save(still)
    for path in (animated, still):
        _late_text(path, "parameters", "a fox")
    assert read_png_text(still) == {"parameters": "a fox"}
    with Image.open(animated) as image:
        assert image.is_animated and image.text == {"parameters": "a fox"}  # what Pillow finds by decoding
    assert read_png_text(animated) == {}

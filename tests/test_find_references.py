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

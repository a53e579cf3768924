"""The app in-process, driven through gradio_client like a script user would."""

from dataclasses import fields

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import CONTROL_FIELDS, GenerationRequest
from ui import build_demo
from ui.tabs.img2img import strength_readout


@pytest.fixture(scope="module")
def served(settings, manager):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    yield url, Client(url, verbose=False)
    demo.close()


def test_api_parameters_are_the_request_fields(served):
    api = served[1].view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [f.name for f in fields(GenerationRequest)]
    assert [p["parameter_name"] for p in api["/txt2img"]["parameters"]] == ["control_image"] + [
        n for n in names if n != "strength"]
    assert [p["parameter_name"] for p in api["/img2img"]["parameters"]] == ["image", "mask_image"] + [
        n for n in names if n not in CONTROL_FIELDS]  # no ControlNet img2img in diffusers
    assert not any("strength_readout" in name for name in api)  # helpers are private


def test_txt2img_over_the_api(served):
    path, seed, metadata = served[1].predict(prompt="a lighthouse", height=64, width=64, seed=21,
                                             api_name="/txt2img")
    assert seed == 21 and metadata["forwards"] == 8
    image = Image.open(path)
    assert image.size == (64, 64) and {"parameters", "llm_dit"} <= set(image.text)


def test_img2img_over_the_api(served, tmp_path):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "init.png")
    _, seed, metadata = served[1].predict(image=handle_file(str(tmp_path / "init.png")), prompt="a boat",
                                          height=64, width=64, seed=3, strength=0.5, api_name="/img2img")
    assert metadata["mode"] == "img2img" and metadata["forwards"] == 4 and seed == 3


@pytest.mark.parametrize("kwargs,message", [
    ({"height": 65}, "height=65 is not a multiple of 16"),
    ({"prompt": ""}, "prompt is empty"),
    ({"num_inference_steps": 101}, "num_inference_steps=101 is out of range"),
])
def test_errors_reach_the_client_and_the_app_keeps_serving(served, kwargs, message):
    request = {"prompt": "a cat", "height": 64, "width": 64, **kwargs}
    with pytest.raises(Exception, match=message):
        served[1].predict(**request, api_name="/txt2img")
    assert served[1].predict(prompt="a cat", height=64, width=64, api_name="/txt2img")[2]["forwards"] == 8


def test_img2img_without_image_is_explained(served):
    with pytest.raises(Exception, match="img2img needs an init image"):
        served[1].predict(image=None, prompt="a cat", height=64, width=64, api_name="/img2img")


def test_page_is_served_before_any_model_loads(settings):
    fresh = ModelManager(settings)
    demo = build_demo(settings, fresh)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        assert "Offline tiny models in use" in httpx.get(url + "config", timeout=30).text
        assert not fresh.is_loaded
    finally:
        demo.close()


def test_strength_readout():
    assert strength_readout(8, 0.9, 3.0).startswith("7 of 8 forwards, from sigma 0.955")
    assert "ignored" in strength_readout(8, 1.0, 3.0)
    assert "0 forwards" in strength_readout(8, 0.1, 3.0)


def test_corrupt_upload_is_explained_over_the_api(served, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(Exception, match="is not a readable image"):
        served[1].predict(image=handle_file(str(broken)), prompt="a cat", height=64, width=64, api_name="/img2img")


def test_16_bit_upload_is_not_saturated_by_gradio(served, tmp_path):
    """gr.Image(type="filepath") hands us the file; our loader converts 16-bit properly."""
    import numpy as np

    Image.fromarray(np.full((64, 64), 16384, dtype=np.uint16)).save(tmp_path / "deep.png")
    _, _, metadata = served[1].predict(image=handle_file(str(tmp_path / "deep.png")), prompt="a cat",
                                       height=64, width=64, seed=1, api_name="/img2img")
    from llm_dit.core.images import image_sha256, load_image

    ours = load_image(str(tmp_path / "deep.png"))
    assert ours.getpixel((0, 0)) == (64, 64, 64)  # 16384 / 65535 of full scale, not saturated white
    assert metadata["init_image"]["sha256"] == image_sha256(ours)


def test_vl_generate_and_vl_extract_over_the_api(served, tmp_path):
    from dataclasses import fields as dc_fields

    from llm_dit.core.request import VLRequest

    Image.new("RGB", (128, 128), (30, 160, 60)).save(tmp_path / "ref.png")
    api = served[1].view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [f.name for f in dc_fields(VLRequest)]
    assert [p["parameter_name"] for p in api["/vl_generate"]["parameters"]] == ["references", "structure_image",
                                                                              "control_image", "mask_image"] + names
    assert [p["parameter_name"] for p in api["/vl_extract"]["parameters"]] == ["references"] + names
    refs = [handle_file(str(tmp_path / "ref.png"))]
    path, seed, metadata, report, token_map, readout = served[1].predict(
        references=refs, prompt="a meadow", height=64, width=64, seed=9, alpha=0.5, blend_mode="linear_rms",
        api_name="/vl_generate")
    assert metadata["mode"] == "vl" and metadata["request"]["blend_mode"] == "linear_rms"
    assert report["effective_alpha"] == metadata["vl"]["effective_alpha"]
    assert "VL share 0.500" in readout and "| 0 | full |" in token_map  # linear_rms: the share is alpha
    assert {"parameters", "llm_dit"} <= set(Image.open(path).text)
    stats, export, _, _ = served[1].predict(references=refs, prompt="a meadow", api_name="/vl_extract")
    assert export.endswith(".safetensors") and "vl_after_scaling" in stats["stats"]


def test_vl_errors_over_the_api(served, tmp_path):
    with pytest.raises(Exception, match="references: no reference image"):
        served[1].predict(references=[], prompt="a meadow", api_name="/vl_generate")
    with pytest.raises(Exception, match=r"alpha=2.0 is out of range"):
        Image.new("RGB", (64, 64)).save(tmp_path / "r.png")
        served[1].predict(references=[handle_file(str(tmp_path / "r.png"))], prompt="a meadow", alpha=2.0,
                          api_name="/vl_generate")


def test_rewrite_and_templates_over_the_api(served):
    from dataclasses import fields as dc_fields

    from llm_dit.core.request import RewriteRequest

    api = served[1].view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/rewrite"]["parameters"]] == ["image"] + [
        f.name for f in dc_fields(RewriteRequest)]
    templates = served[1].predict(api_name="/templates")
    assert {"name": "Swiss poster", "category": "design"}.items() <= next(
        t for t in templates if t["name"] == "Swiss poster").items()
    assert sum(t["category"] == "rewriter" for t in templates) >= 4
    text, raw, metadata = served[1].predict(prompt="a fox", seed=3, max_new_tokens=16, api_name="/rewrite")
    assert raw and metadata["backend"] == "qwen3" and metadata["seed"] == 3
    with pytest.raises(Exception, match="max_new_tokens=9999 is out of range"):
        served[1].predict(prompt="a fox", max_new_tokens=9999, api_name="/rewrite")


def test_txt2img_applies_a_style_template_over_the_api(served):
    _, _, metadata = served[1].predict(prompt="a fox", height=64, width=64, template="Bauhaus composition",
                                       api_name="/txt2img")
    assert metadata["template"] == "Bauhaus composition" and "<|im_start|>system" in metadata["chat_text"]


def test_the_client_guide_drives_every_public_endpoint(served, tmp_path):
    import runpy

    guide = runpy.run_path("examples/client_guide.py")
    got = guide["main"]([served[0], "--size", "64", "--out", str(tmp_path)])
    assert set(got) == {"templates", "rewrite", "txt2img", "img2img", "vl_generate", "vl_extract", "vl_layer_scan",
                        "compare", "encode", "vl_encode", "run_study_text", "list_my_studies", "read_study"}
    assert got["img2img"] == 4 and (tmp_path / "conditioning.safetensors").exists()
    public = served[1].view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/" + name for name in got} == set(public)  # the guide covers every public endpoint


def test_compare_over_the_api(served, tmp_path):
    Image.new("RGB", (128, 128), (10, 90, 200)).save(tmp_path / "ref.png")
    progress, grids, table, cells, files, counts = served[1].predict(
        references=[handle_file(str(tmp_path / "ref.png"))], x_axis="alpha", x_values="0, 0.5",
        y_axis="blend_mode", y_values="linear, adain, linear_rms", prompt="a meadow", height=64, width=64,
        seed=2, api_name="/compare")
    assert "6 / 6 cells" in progress and len(grids) == 1 and len(cells) == 6
    assert table["headers"][:3] == ["cell", "alpha", "blend_mode"] and len(table["data"]) == 6
    assert counts["distinct_extractions"] == 1 and counts["distinct_texts"] == 1
    assert any(f.endswith(".csv") for f in files) and any(f.endswith(".json") for f in files)
    with pytest.raises(Exception, match=r"the sweep has 6 cells, more than cell_limit=4"):
        served[1].predict(references=[handle_file(str(tmp_path / "ref.png"))], x_axis="alpha", x_values="0, 0.5",
                          y_axis="blend_mode", y_values="linear, adain, linear_rms", cell_limit=4,
                          prompt="a meadow", api_name="/compare")

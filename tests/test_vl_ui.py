"""The VL tab's issue-14 additions: greyed-out fields, the layer scan over the API."""

import csv

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.pipelines.recipe import inactive_fields
from llm_dit.core.request import VLRequest
from ui import build_demo
from ui.tabs.vl import DEPENDENT, applicable


@pytest.fixture(scope="module")
def served(settings, manager):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    yield url, Client(url, verbose=False), demo
    demo.close()


@pytest.mark.parametrize("overrides", [{}, {"vl_composition": "dual", "outlier_mode": "zero"}, {"alpha": 0.0},
                                       {"alpha": 1.0}, {"blend_mode": "concat", "scale_to_text": False}])
def test_fields_that_cannot_matter_are_greyed_out_with_the_reason(overrides):
    request = VLRequest(**overrides)
    off = inactive_fields(request)
    updates = dict(zip(DEPENDENT, applicable(request)))
    assert set(off) <= set(DEPENDENT)  # every ignored field has a control to grey out
    for name, update in updates.items():
        assert update["interactive"] == (name not in off), name
        if name in off:
            assert update["info"] == off[name]


def test_the_defaults_start_greyed_out(served):
    """Before any change event, the defaults' ignored fields are already greyed out."""
    config = served[2].get_config_file()
    by_label = {}
    for component in config["components"]:  # the VL tab's controls come first (the encode tab has its own)
        by_label.setdefault(component.get("props", {}).get("label"), component.get("props", {}))
    assert by_label["VL text"]["interactive"] is False  # the default: VL reads the prompt
    assert by_label["VL text"]["info"] == inactive_fields(VLRequest())["vl_text"]
    assert by_label["VL system prompt"].get("interactive") is not False


def test_layer_scan_over_the_api(served, tmp_path):
    Image.new("RGB", (128, 128), (30, 160, 60)).save(tmp_path / "ref.png")
    corr, outliers, path, note = served[1].predict(
        references=[handle_file(str(tmp_path / "ref.png"))], prompt="a meadow", api_name="/vl_layer_scan")
    rows = list(csv.DictReader(open(path)))
    assert {r["tokens"] for r in rows} == {"image", "text"} and len(rows) == 18  # 9 hidden states x 2
    assert "layer -" in note
    assert corr["columns"][:2] == ["layer", "tokens"] and len(corr["data"]) == 18 and outliers == corr


def test_the_scan_suggests_a_layer_for_the_button():
    from llm_dit.conditioning.layerscan import best_layer
    from ui.tabs.vl import scan_outputs

    rows = [{"layer": -1, "tokens": "image", "count": 4, "std": 1.0, "std_correlation": 0.9, "outlier_dims": 0},
            {"layer": -2, "tokens": "image", "count": 4, "std": 1.0, "std_correlation": 0.8, "outlier_dims": 3},
            {"layer": -3, "tokens": "image", "count": 4, "std": 1.0, "std_correlation": 0.5, "outlier_dims": 0}]
    frame, _, _, note, layer = scan_outputs(rows, "scan.csv")
    assert layer == best_layer(rows) == -3  # fewest outliers first; -1 (after the final norm) never
    assert "layer -3" in note and list(frame.columns)[:2] == ["layer", "tokens"]

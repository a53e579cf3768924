"""Per-layer statistics scan (issue 14 #9) on the tiny Qwen3-VL."""

import csv
import io

import pytest
import torch
from PIL import Image

from llm_dit.conditioning import blend
from llm_dit.conditioning.layerscan import COLUMNS, best_layer, scan, to_csv
from llm_dit.runtime.models import ModelManager
from llm_dit.conditioning.vl import ExtractionParams, extract

RED = Image.new("RGB", (128, 128), (210, 40, 30))


def test_one_forward_gives_every_layer(manager):
    rows = scan(manager, RED, ExtractionParams(text="a cat"), text_layer=-2, threshold=1.5)
    layers = manager.vl_config().text_config.num_hidden_layers + 1
    assert [r["layer"] for r in rows if r["tokens"] == "image"] == list(range(-1, -layers - 1, -1))
    assert {r["tokens"] for r in rows} == {"image", "text"}
    ref = manager.reference_stats(-2)
    for layer in (-3, -6):  # each row is that layer's hidden state, image pads only
        ex = extract(manager, RED, ExtractionParams(text="a cat", hidden_layer=layer, token_mode="image_no_markers"))
        row = next(r for r in rows if r["layer"] == layer and r["tokens"] == "image")
        assert row["count"] == ex.embeds.shape[0]
        assert row["std"] == pytest.approx(float(ex.embeds.std(correction=0)), rel=1e-4)
        assert row["outlier_dims"] == int((blend.dim_std_ratio(ex.embeds, ref) > 1.5).sum())
        dim_std = ex.embeds.std(dim=0, correction=0)
        corr = float(torch.corrcoef(torch.stack([dim_std, ref.std]))[0, 1])
        assert row["std_correlation"] == pytest.approx(corr, abs=1e-4)


def test_scans_are_cached_and_choose_a_layer(settings):
    fresh = ModelManager(settings)
    first = scan(fresh, RED, ExtractionParams(text="a cat"))
    loads = fresh.load_counts["vl"]
    assert scan(fresh, RED.copy(), ExtractionParams(text="a cat")) == first
    assert fresh.load_counts["vl"] == loads == 1
    scan(fresh, RED, ExtractionParams(text="a cat"), threshold=2.0)  # another threshold: another scan
    assert fresh.load_counts["vl"] == 2
    layer = best_layer(first)
    image_rows = [r for r in first if r["tokens"] == "image" and r["layer"] != -1]
    fewest = min(r["outlier_dims"] for r in image_rows)
    assert layer in [r["layer"] for r in image_rows if r["outlier_dims"] == fewest]


def test_csv_export():
    rows = [{"layer": -1, "tokens": "image", "count": 16, "std": 1.5, "std_correlation": 0.5, "outlier_dims": 2}]
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert tuple(parsed[0]) == COLUMNS and parsed[0]["std_correlation"] == "0.5"

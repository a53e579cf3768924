"""Sweep scores with a metrics model (issue 14 #10): a tiny random CLIP in the hub layout."""

from dataclasses import replace

import pytest
from PIL import Image

from llm_dit.studies.compare import SweepSpec, run_sweep
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import VLRequest
from llm_dit.runtime.scores import Scorer
from llm_dit.runtime.settings import load_settings
from llm_dit.runtime.tiny import ensure_tiny_clip

REF = Image.new("RGB", (128, 128), (200, 60, 30))
BASE = VLRequest(prompt="a red fox in the snow", height=64, width=64, seed=11)


@pytest.fixture(scope="module")
def clip_dir(tiny_cache):
    return ensure_tiny_clip(cache_dir=tiny_cache)


def test_the_tiny_clip_has_the_hub_layout(clip_dir):
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"} <= {
        p.name for p in clip_dir.iterdir()}
    scorer = Scorer(str(clip_dir))
    assert type(scorer.model).__name__ == "CLIPModel"


def test_scores_are_cosine_similarities(clip_dir):
    scorer = Scorer(str(clip_dir))
    blue = Image.new("RGB", (96, 64), (20, 60, 220))
    same = scorer.score(REF, REF, "a red fox")
    assert same["style_similarity"] == pytest.approx(1.0, abs=1e-4)
    other = scorer.score(blue, REF, "a red fox")
    assert -1 <= other["style_similarity"] < same["style_similarity"]
    assert other["style_similarity"] == scorer.score(REF, blue, "a red fox")["style_similarity"]  # symmetric
    assert scorer.score(REF, REF, "a red fox")["prompt_similarity"] != scorer.score(REF, REF, "the sea")["prompt_similarity"]


def test_sweep_cells_get_scores_only_with_a_metrics_model(settings, clip_dir, tmp_path):
    scored = ModelManager(replace(settings, metrics_model=str(clip_dir)))
    sweep = run_sweep(scored, SweepSpec("alpha", "0, 0.6"), BASE, [REF], tmp_path / "s1")
    scorer = scored.scorer()
    for row, cell in zip(sweep.rows(), sweep.finished()):
        assert row["style_similarity"] == scorer.score(cell.result.image, REF, BASE.prompt)["style_similarity"]
        assert row["prompt_similarity"] == scorer.score(cell.result.image, REF, BASE.prompt)["prompt_similarity"]
        assert "palette_distance" in row and "ssim" in row  # the cheap metrics stay
    assert scored.load_counts["metrics"] == 1
    plain = run_sweep(ModelManager(settings), SweepSpec("alpha", "0"), BASE, [REF], tmp_path / "s2").rows()[0]
    assert "style_similarity" not in plain and "palette_distance" in plain


def test_the_flag_and_a_bad_folder(tmp_path, settings):
    assert load_settings(["--metrics-model", str(tmp_path)]).metrics_model == str(tmp_path)
    assert load_settings([], {"LLM_DIT_METRICS_MODEL": "/x"}).metrics_model == "/x"
    bad = ModelManager(replace(settings, metrics_model=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"metrics_model='.*missing' is not a folder: give a local CLIP or SigLIP"):
        run_sweep(bad, SweepSpec("alpha", "0"), BASE, [REF], tmp_path / "s3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"could not be loaded as a CLIP or SigLIP model"):
        Scorer(str(tmp_path / "empty"))

"""Every VL knob tells the truth (issue 14): weights, statistics sources, outlier masks, the VL
share, no silent overrides, and skipping the models that cannot matter."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from llm_dit.conditioning import blend
from llm_dit.pipelines.recipe import condition, extraction_params, inactive_fields, vl_generate
from llm_dit.pipelines.generate import PromptEncoding, encode_prompt, run
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import VLRequest
from llm_dit.conditioning.vl import extract

RED = Image.new("RGB", (128, 128), (210, 40, 30))
BLUE = Image.new("RGB", (128, 96), (20, 60, 220))
NOISE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
SMALL = {"prompt": "a fox in the snow", "height": 64, "width": 64, "seed": 5}


def vl_request(**overrides) -> VLRequest:
    return VLRequest(**{**SMALL, **overrides})


def embeds(manager, request, refs):
    return condition(manager, request, refs).encoding.prompt_embeds


# ---- 1. reference weights shape the statistics --------------------------------------------------
@pytest.mark.parametrize("normalization", ["global", "per_dim", "hybrid"])
@pytest.mark.parametrize("outlier_mode", ["none", "zero", "clamp", "scale"])
def test_a_zero_weight_reference_changes_nothing(manager, normalization, outlier_mode):
    request = vl_request(normalization=normalization, outlier_mode=outlier_mode, outlier_threshold=1.5)
    single = embeds(manager, request, [RED])
    weighted = embeds(manager, replace(request, reference_weights="1, 0"), [RED, BLUE])
    torch.testing.assert_close(weighted, single)


@pytest.mark.parametrize("composition", ["extraction", "intra_vl"])
def test_reference_weights_weight_the_statistics(manager, composition):
    """A nearly-zero weight is nearly no reference (not an unweighted half of the statistics)."""
    request = vl_request(normalization="per_dim", vl_composition=composition)
    single = embeds(manager, request, [RED])
    tiny = embeds(manager, replace(request, reference_weights="1, 0.0001"), [RED, BLUE])
    torch.testing.assert_close(tiny, single, rtol=1e-3, atol=1e-2)
    even = embeds(manager, replace(request, reference_weights="1, 1"), [RED, BLUE])
    assert not torch.allclose(even, single, rtol=1e-3, atol=1e-2)


# ---- 2. adain takes the VL's statistics from the whole extraction -------------------------------
def test_adain_per_dim_takes_the_whole_extractions_statistics(manager):
    request = vl_request(alpha=1.0, blend_mode="adain_per_dim", scale_to_text=False)
    out = embeds(manager, request, [RED])
    full = extract(manager, RED, extraction_params(request)).embeds
    assert out.shape[0] < full.shape[0]
    torch.testing.assert_close(out.mean(0), full.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std(0, correction=0), full.std(0, correction=0), atol=1e-4, rtol=1e-3)
    # so the length alignment cannot matter, and the request says so
    assert torch.equal(out, embeds(manager, replace(request, length_mode="pool"), [RED]))
    assert "length_mode" in inactive_fields(request)


def test_adain_reports_what_it_gives(manager):
    cond = condition(manager, vl_request(alpha=1.0, blend_mode="adain"), [RED])
    linear = condition(manager, vl_request(alpha=0.5), [RED])
    assert any("one constant offset per token" in w for w in cond.encoding.warnings)
    assert cond.report["effective_alpha"] < linear.report["effective_alpha"]


# ---- 3. one list of outlier dims, and a mask changes what it reports ---------------------------
def test_the_reported_outlier_dims_are_the_masked_dims(manager):
    cond = condition(manager, vl_request(alpha=1.0, outlier_mode="zero", outlier_threshold=1.5), [RED])
    dims = cond.report["masked_dims"]
    assert dims and dims == cond.report["outlier_dims"]
    assert torch.all(cond.encoding.prompt_embeds[:, dims] == 0)
    assert cond.report["stats"]["vl_before_scaling"]["tokens"] == cond.extractions[0].embeds.shape[0]


@pytest.mark.parametrize("mode", ["zero", "clamp", "scale"])
def test_a_mask_changes_exactly_the_dims_it_reports(manager, mode):
    base = vl_request(alpha=1.0, vl_hidden_layer=-6, scale_to_text=False, outlier_threshold=1.2)
    plain = embeds(manager, base, [NOISE])
    cond = condition(manager, replace(base, outlier_mode=mode), [NOISE])
    dims = cond.report["masked_dims"]
    assert dims
    keep = [d for d in range(plain.shape[1]) if d not in dims]
    out = cond.encoding.prompt_embeds
    assert torch.equal(out[:, keep], plain[:, keep])
    changed = (out[:, dims] - plain[:, dims]).abs().amax(dim=0)
    assert bool(torch.all(changed > 0)), f"dims {dims} reported masked, changes {changed.tolist()}"


def test_no_outliers_raise_no_warning(manager):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cond = condition(manager, vl_request(outlier_mode="clamp", outlier_threshold=1000.0), [RED])
    assert cond.report["masked_dims"] == []


# ---- 4. the VL share -----------------------------------------------------------------------------
def test_the_share_is_recorded_with_its_range(manager):
    cond = condition(manager, vl_request(alpha=0.3), [RED])
    low, high = cond.report["effective_alpha_range"]
    assert 0 < low <= cond.report["effective_alpha"] <= high < 1
    text = cond.encoding.encoded.embeds
    weight = manager.pipeline().transformer.cap_embedder[0].weight.detach()
    vl_part = cond.encoding.prompt_embeds - 0.7 * text
    expected = blend.vl_share(0.7 * text, vl_part, weight)
    assert cond.report["effective_alpha"] == pytest.approx(expected["mean"], abs=2e-4)


def test_the_vl_tab_shows_alpha_and_share_side_by_side():
    from ui.tabs.vl import alpha_readout

    text = alpha_readout({"effective_alpha": 0.25, "effective_alpha_range": [0.2, 0.31]}, 0.3)
    assert "alpha 0.30" in text and "0.250" in text and "0.200" in text and "0.310" in text


# ---- 5. no silent overrides ----------------------------------------------------------------------
def test_truncate_that_cannot_truncate_is_reported(manager):
    long = " ".join(["a fox with golden fur walking in deep snow"] * 4)
    cond = condition(manager, vl_request(prompt=long, length_mode="truncate", token_mode="image_only"), [RED])
    assert cond.extractions[0].embeds.shape[0] < cond.encoding.prompt_embeds.shape[0]
    assert cond.report["ran"]["length_mode"] == "interpolate"
    assert any("length_mode='truncate' cannot lengthen" in w for w in cond.encoding.warnings)
    fits = condition(manager, vl_request(length_mode="truncate"), [RED])
    assert fits.report["ran"]["length_mode"] == "truncate" and not fits.encoding.warnings


@pytest.mark.parametrize("composition,token_modes", [("intra_vl", ["full"]), ("dual", ["image_only", "text_only"])])
def test_compositions_record_the_tokens_they_used(manager, composition, token_modes):
    request = vl_request(vl_composition=composition, token_mode="image_no_markers")
    cond = condition(manager, request, [RED])
    assert [ex["token_mode"] for ex in cond.report["extractions"]] == token_modes
    assert "token_mode" in cond.report["ignored"]


BASES = {
    "default": {},
    "intra_vl": {"vl_composition": "intra_vl"},
    "dual, no scaling": {"vl_composition": "dual", "scale_to_text": False},
    "per_dim adain": {"normalization": "per_dim", "blend_mode": "adain_per_dim", "vl_use_prompt": True},
    "pure VL": {"alpha": 1.0},
    "pure VL, unscaled": {"alpha": 1.0, "scale_to_text": False, "normalization": "hybrid"},
    "alpha 0": {"alpha": 0.0},
}
CHANGES = {"vl_text": "an oil painting", "image_text_ratio": 0.9, "vl_text_hidden_layer": -2,
           "token_mode": "image_only", "normalization": "per_dim", "target_std": 7.0,
           "outlier_threshold": 1.5, "length_mode": "pool", "scale_to_text": False, "hidden_layer": -3,
           "concat_tokens": 4}


@pytest.mark.parametrize("base", list(BASES))
def test_an_ignored_field_changes_nothing(manager, base):
    """What inactive_fields (greyed out in the UI, recorded in metadata) lists must not matter."""
    request = vl_request(**BASES[base])
    off = inactive_fields(request)
    reference = condition(manager, request, [RED]).encoding.prompt_embeds
    names = [n for n in CHANGES if n in off]
    assert names
    for name in names:
        changed = condition(manager, replace(request, **{name: CHANGES[name]}), [RED]).encoding.prompt_embeds
        if name in ("target_std", "scale_to_text") and request.alpha == 1.0:  # a global scale only
            changed, reference_n = blend.rms_normalize(changed), blend.rms_normalize(reference)
            torch.testing.assert_close(changed, reference_n, msg=name)
        else:
            assert torch.equal(changed, reference), name


# ---- 6. skip what cannot matter -----------------------------------------------------------------
def test_alpha_zero_runs_no_vl_extraction(settings):
    fresh = ModelManager(settings)
    cond = condition(fresh, vl_request(alpha=0.0, blend_mode="adain_per_dim"), [RED])
    assert fresh.load_counts["vl"] == 0 and fresh.vl_cache.stats()["entries"] == 0
    assert cond.report["ran"]["vl_extraction"] is False and cond.report["effective_alpha"] == 0.0


def _caption_input(manager, request, image, encoding):
    """The DiT's normalised caption input (the output of its caption RMSNorm) and the image."""
    seen = []
    norm = manager.pipeline().transformer.cap_embedder[0]
    hook = norm.register_forward_hook(lambda module, args, out: seen.append(out.detach().clone()))
    try:
        result = run(manager, request, image, encoding=encoding)
    finally:
        hook.remove()
    return seen, np.asarray(result.image).astype(int)


def test_pure_vl_needs_no_text_encoder(settings):
    fresh = ModelManager(settings)
    request = vl_request(alpha=1.0, strength=0.8)
    cond = condition(fresh, request, [RED])
    assert not fresh.text_encoder_loaded and fresh.load_counts["text_encoder"] == 0
    assert "text_encoder" not in {r["component"] for r in fresh.memory_report()}
    assert cond.report["ran"]["text_encoder"] is False
    ours, ours_image = _caption_input(fresh, request, RED, cond.encoding)
    assert not fresh.text_encoder_loaded

    # today's pure-VL run: the VL sequence scaled to the text embeddings' std
    text = encode_prompt(fresh, request)
    ex = extract(fresh, RED, extraction_params(request))
    aligned = blend.align_length(ex.embeds, text.encoded.embeds.shape[0], "interpolate")
    scaled, _ = blend.align_statistics(aligned, text.encoded.embeds, fresh.reference_stats(-2))
    theirs, their_image = _caption_input(fresh, request, RED, PromptEncoding(
        text.chat, text.encoded, None, scaled, text.timeline))
    # RMSNorm divides by sqrt(ms + eps): a global scale k moves a token by at most eps / (2·ms)
    eps = fresh.pipeline().transformer.cap_embedder[0].eps
    bound = eps / float(cond.encoding.prompt_embeds.pow(2).mean(dim=-1).min())
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=bound, atol=1e-6)
    assert np.abs(ours_image - their_image).max() <= 1
    assert cond.encoding.encoded.token_count == text.encoded.token_count


def test_pure_vl_still_generates_and_regenerates(settings, tmp_path):
    from llm_dit.core.pnginfo import request_from_png

    fresh = ModelManager(settings)
    result = vl_generate(fresh, vl_request(alpha=1.0, blend_mode="linear_rms"), [RED])
    assert not fresh.text_encoder_loaded and result.metadata["vl"]["ran"]["text_encoder"] is False
    again = vl_generate(fresh, request_from_png(result.save(tmp_path)), [RED])
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))

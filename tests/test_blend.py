"""Blend functions (BRIEF §5): exact endpoints, whole-sequence statistics, effective alpha."""

import pytest
import torch

from llm_dit.conditioning import blend
from llm_dit.conditioning.blend import ReferenceStats

g = torch.Generator().manual_seed(0)
TEXT = torch.randn(12, 16, generator=g) * 60
VL = torch.randn(12, 16, generator=g) * 12 + 3
REF = ReferenceStats(torch.zeros(16), torch.full((16,), 60.0))


@pytest.mark.parametrize("mode", ["linear", "linear_rms"])
def test_alpha_endpoints_are_exact(mode):
    assert torch.equal(blend.mix(TEXT, VL, 0.0, mode), TEXT)
    assert torch.equal(blend.mix(TEXT, VL, 1.0, mode), VL)


@pytest.mark.parametrize("mode", blend.BLEND_MODES)
def test_alpha_zero_is_text_for_every_mode(mode):
    assert torch.equal(blend.mix(TEXT, VL, 0.0, mode, neutral=VL * 0.5), TEXT)


def test_adain_uses_all_tokens():
    """The styled text takes the VL's mean/std over the WHOLE sequence (not a prefix)."""
    vl = torch.cat([torch.zeros(4, 16), torch.randn(40, 16, generator=g) * 5 + 7])  # prefix differs
    text = torch.randn(44, 16, generator=g)
    styled = blend.mix(text, vl, 1.0, "adain")
    assert styled.mean().item() == pytest.approx(vl.mean().item(), abs=1e-4)
    assert styled.std(correction=0).item() == pytest.approx(vl.std(correction=0).item(), rel=1e-4)
    per_dim = blend.mix(text, vl, 1.0, "adain_per_dim")
    torch.testing.assert_close(per_dim.mean(0), vl.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(per_dim.std(0, correction=0), vl.std(0, correction=0), atol=1e-3, rtol=1e-3)


def test_style_delta_adds_the_mean_difference():
    neutral = torch.randn(12, 16, generator=g)
    out = blend.mix(TEXT, VL, 0.5, "style_delta", neutral)
    torch.testing.assert_close(out, TEXT + 0.5 * (VL.mean(0) - neutral.mean(0)))
    with pytest.raises(ValueError, match="needs a neutral extraction"):
        blend.mix(TEXT, VL, 0.5, "style_delta")


def test_vl_share_is_alpha_when_both_sides_have_equal_token_rms():
    """Issue 14 #4: the share the DiT receives after its caption RMSNorm, a/(a+b)."""
    vl = blend.rms_normalize(VL) * 60
    text = blend.rms_normalize(TEXT) * 60
    share = blend.vl_share(*blend.components(text, vl, 0.3, "linear"))
    assert share == {"mean": 0.3, "min": 0.3, "max": 0.3}
    for mode in ("linear", "linear_rms"):
        assert blend.vl_share(*blend.components(TEXT, VL, 0.0, mode))["max"] == 0.0
        assert blend.vl_share(*blend.components(TEXT, VL, 1.0, mode))["min"] == 1.0


def test_vl_share_per_token_and_norm_weight():
    """a = alpha·rms(V), b = (1−alpha)·rms(T) per token; a non-uniform norm weight counts."""
    text, vl = torch.ones(2, 4), torch.ones(2, 4)
    vl[1] *= 3.0  # token 1: VL three times the text's RMS
    share = blend.vl_share(*blend.components(text, vl, 0.5, "linear"))
    assert share["min"] == pytest.approx(0.5) and share["max"] == pytest.approx(0.75)
    assert share["mean"] == pytest.approx(0.625)
    text = torch.tensor([[1.0, 0.0]])
    vl = torch.tensor([[0.0, 1.0]])
    weight = torch.tensor([1.0, 3.0])  # the norm amplifies the VL's dimension
    assert blend.vl_share(*blend.components(text, vl, 0.5, "linear"), weight)["mean"] == pytest.approx(0.75)


def test_unscaled_vl_is_drowned_by_text_after_rmsnorm():
    """The reason for scale_to_text and linear_rms: VL ~5x smaller reads far below alpha."""
    small_vl = torch.randn(12, 16, generator=g) * 12
    raw = blend.vl_share(*blend.components(TEXT, small_vl, 0.5, "linear"))["mean"]
    scaled, _ = blend.align_statistics(small_vl, TEXT, REF)
    aligned = blend.vl_share(*blend.components(TEXT, scaled, 0.5, "linear"))["mean"]
    rms = blend.vl_share(*blend.components(TEXT, small_vl, 0.5, "linear_rms"))["mean"]
    assert raw < 0.2 < 0.4 < aligned < 0.6 and rms == pytest.approx(0.5, abs=1e-4)


def test_global_adain_moves_each_token_by_one_constant():
    """Issue 14 #2: adain with matched stds adds one constant: a small VL share even at alpha 1."""
    scaled, _ = blend.align_statistics(VL, TEXT, REF)
    text_part, vl_part = blend.components(TEXT, scaled, 1.0, "adain")
    torch.testing.assert_close(vl_part, vl_part[:1].expand_as(vl_part), atol=1e-3, rtol=0)
    share = blend.vl_share(text_part, vl_part)["mean"]
    assert share < 0.3 < 0.9 < blend.vl_share(*blend.components(TEXT, scaled, 1.0, "linear"))["mean"]


def test_empty_outlier_set_raises_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = blend.fit_statistics(VL, VL, TEXT, REF, outlier_mode="clamp", threshold=1000.0)
    assert t.outlier_dims == [] and torch.equal(t.apply(VL), blend.align_statistics(VL, TEXT, REF)[0])


def test_scaling_modes():
    scaled, _ = blend.align_statistics(VL, TEXT, REF, normalization="global")
    assert scaled.std().item() == pytest.approx(TEXT.std().item(), rel=1e-4)
    target, _ = blend.align_statistics(VL, TEXT, REF, target_std=5.0)
    assert target.std().item() == pytest.approx(5.0, rel=1e-4)
    per_dim, _ = blend.align_statistics(VL, TEXT, REF, normalization="per_dim")
    torch.testing.assert_close(per_dim.std(0, correction=0), REF.std, rtol=1e-3, atol=1e-3)
    raw, _ = blend.align_statistics(VL, TEXT, REF, scale_to_text=False)
    assert torch.equal(raw, VL)


@pytest.mark.parametrize("mode", ["zero", "clamp", "scale"])
def test_outlier_masking_tames_only_the_outlier_dims(mode):
    vl = torch.randn(50, 16, generator=g)
    vl[:, 3] *= 400  # one dimension far more spread than the rest
    out, dims = blend.mask_outliers(vl, ReferenceStats(torch.zeros(16), torch.ones(16)), mode, 10.0)
    assert dims == [3]
    keep = [d for d in range(16) if d != 3]
    assert torch.equal(out[:, keep], vl[:, keep])
    assert out[:, 3].std() < vl[:, 3].std() / 10
    if mode == "scale":
        assert blend.dim_std_ratio(out, ReferenceStats(torch.zeros(16), torch.ones(16)))[3] == pytest.approx(10, rel=0.05)


def test_length_alignment_and_weighted_sum():
    long = torch.randn(300, 16, generator=g)
    for mode in blend.LENGTH_MODES:
        assert blend.align_length(long, 12, mode).shape == (12, 16)
    torch.testing.assert_close(blend.align_length(long, 12, "truncate"), long[:12])
    a, b = torch.ones(5, 16), torch.zeros(9, 16)
    torch.testing.assert_close(blend.weighted_sum([(a, 3.0), (b, 1.0)], 7), torch.full((7, 16), 0.75))
    with pytest.raises(ValueError, match="not all zero"):
        blend.weighted_sum([(a, 0.0)], 7)


@pytest.mark.parametrize("call,message", [
    (lambda: blend.mix(TEXT, VL, 1.5), r"alpha=1.5 is out of range"),
    (lambda: blend.mix(TEXT, VL, 0.5, "overlay"), r"blend_mode='overlay' is unknown"),
    (lambda: blend.align_length(VL, 4, "stretch"), r"length_mode='stretch' is unknown"),
    (lambda: blend.align_statistics(VL, TEXT, REF, normalization="l2"), r"normalization='l2' is unknown"),
    (lambda: blend.mask_outliers(VL, REF, "drop"), r"outlier_mode='drop' is unknown"),
])
def test_bad_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_per_dim_keeps_means_and_stays_bounded_on_flat_input():
    """A flat (e.g. plain grey) reference must not explode: spread is floored, factor capped."""
    flat = torch.full((40, 16), 2.0) + torch.randn(40, 16, generator=g) * 1e-6
    out, _ = blend.align_statistics(flat, TEXT, REF, normalization="per_dim")
    assert out.abs().max() < 2.0 * 1.01 + 1e-6 * blend.MAX_DIM_FACTOR * 10
    vl = torch.randn(40, 16, generator=g) * 3 + 5
    per_dim, _ = blend.align_statistics(vl, TEXT, REF, normalization="per_dim")
    torch.testing.assert_close(per_dim.mean(0), vl.mean(0), atol=1e-3, rtol=1e-3)


def test_statistics_fitted_on_the_full_sequence_apply_to_the_short_one():
    full = torch.randn(500, 16, generator=g) * 12
    full[:, 5] *= 300
    short = blend.align_length(full, 8)
    _, dims_short = blend.align_statistics(short, TEXT, REF, outlier_mode="zero")
    out, dims = blend.align_statistics(short, TEXT, REF, outlier_mode="zero", source=full)
    assert dims == [5] and torch.all(out[:, 5] == 0)
    assert out.std().item() == pytest.approx(TEXT.std().item(), rel=1e-3)  # the mixed sequence meets the target
    with pytest.raises(ValueError, match=r"weights \[1.0, -0.5\] must be non-negative"):
        blend.weighted_sum([(full, 1.0), (full, -0.5)], 8)

"""Concat mode (issue 14 #8): VL tokens appended after the text, within the caption limit."""

import numpy as np
import pytest
import torch
from PIL import Image

from llm_dit.conditioning import blend
from llm_dit.studies.compare import parse_values
from llm_dit.pipelines.recipe import condition, inactive_fields, vl_generate
from llm_dit.core.request import VLRequest

RED = Image.new("RGB", (128, 128), (210, 40, 30))


def vl_request(**overrides) -> VLRequest:
    return VLRequest(**{"prompt": "a fox in the snow", "height": 64, "width": 64, "seed": 5,
                        "blend_mode": "concat", **overrides})


def test_the_vl_tokens_follow_the_text(manager):
    cond = condition(manager, vl_request(alpha=0.6), [RED])
    text, out = cond.encoding.encoded.embeds, cond.encoding.prompt_embeds
    n, info = text.shape[0], cond.report["concat"]
    full = cond.extractions[0].embeds.shape[0]
    assert info == {"text_tokens": n, "vl_tokens_available": full, "vl_tokens": full, "caption_limit": 288,
                    "budget": 288 - n, "resampled": None}
    assert out.shape[0] == n + full and torch.equal(out[:n], text)
    pure = condition(manager, vl_request(alpha=1.0), [RED]).encoding.prompt_embeds[n:]
    torch.testing.assert_close(out[n:], 0.6 * pure + 0.4 * text.mean(dim=0))
    # the VL share: 0 on the text tokens, the weight's share on the appended ones
    assert cond.report["effective_alpha_range"][0] == 0.0
    appended = blend.vl_share(0.4 * text.mean(dim=0).expand(full, -1), 0.6 * pure)["mean"]
    assert cond.report["effective_alpha"] == pytest.approx(appended * full / (n + full), abs=1e-3)


def test_concat_tokens_resamples_with_the_length_alignment(manager):
    four = condition(manager, vl_request(concat_tokens=4), [RED])
    n = four.encoding.encoded.embeds.shape[0]
    assert four.encoding.prompt_embeds.shape[0] == n + 4
    assert four.report["concat"]["resampled"].endswith("-> 4 (interpolate)")
    pooled = condition(manager, vl_request(concat_tokens=4, length_mode="pool"), [RED])
    assert torch.equal(pooled.encoding.prompt_embeds[:n], four.encoding.prompt_embeds[:n])
    assert not torch.allclose(pooled.encoding.prompt_embeds[n:], four.encoding.prompt_embeds[n:])


def test_the_caption_limit_bounds_the_total(manager):
    words = " ".join(["snow"] * 270)  # close to the tiny DiT's 288-token limit
    cond = condition(manager, vl_request(prompt=words), [RED])
    info = cond.report["concat"]
    assert info["vl_tokens"] == info["budget"] < info["vl_tokens_available"]
    assert cond.encoding.prompt_embeds.shape[0] == 288
    assert any("do not fit beside the prompt" in w for w in cond.encoding.warnings)
    with pytest.raises(ValueError, match=r"blend_mode='concat': the prompt's 288 tokens fill the caption limit"):
        condition(manager, vl_request(prompt=" ".join(["snow"] * 400)), [RED])


def test_concat_generates_and_is_sweepable(manager):
    text_only = vl_generate(manager, vl_request(alpha=0.0), [RED])
    result = vl_generate(manager, vl_request(alpha=0.8), [RED])
    assert result.metadata["tokens"]["used"] == result.metadata["vl"]["concat"]["text_tokens"] + \
        result.metadata["vl"]["concat"]["vl_tokens"]
    assert not np.array_equal(np.asarray(result.image), np.asarray(text_only.image))
    assert parse_values("concat_tokens", "4, 0") == [4, 0]
    assert "concat_tokens" in inactive_fields(vl_request(blend_mode="linear"))
    assert "concat_tokens" not in inactive_fields(vl_request())

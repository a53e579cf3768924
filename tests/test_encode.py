"""Text encoding: equals diffusers' own encoding, hidden layer choice, caption limit, long prompts."""

import pytest
import torch
from diffusers import ZImageTransformer2DModel

from llm_dit.core.encode import caption_limit, encode_text
from llm_dit.pipelines.generate import run
from llm_dit.core.prompt import format_chat
from llm_dit.core.sequence import RESAMPLE_MODES, resample

from .conftest import small

LONG_PROMPT = " ".join(["a red fox with golden fur walking in deep snow under a grey sky"] * 40)


def _encode(manager, text, **kw):
    pipe = manager.pipeline()
    limit = kw.pop("limit", caption_limit(pipe.transformer))
    return encode_text(manager.language_model().model, pipe.tokenizer, text, limit, **kw)


def test_unpadded_encoding_equals_diffusers_encode_prompt(manager):
    pipe = manager.pipeline()
    prompt = "a lighthouse at dusk, oil painting"
    with torch.no_grad():
        theirs = pipe._encode_prompt([prompt], device=torch.device("cpu"))[0]
    ours = _encode(manager, format_chat(prompt)).embeds
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_hidden_layer_selects_that_hidden_state(manager):
    text = format_chat("a blue bird")
    lm = manager.language_model().model
    ids = manager.pipeline().tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        states = lm(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in (-1, -2, -6):
        torch.testing.assert_close(_encode(manager, text, hidden_layer=layer).embeds, states[layer][0])
    assert not torch.equal(_encode(manager, text, hidden_layer=-2).embeds, _encode(manager, text, hidden_layer=-3).embeds)


def test_hidden_layer_out_of_range_is_explained(manager):
    with pytest.raises(ValueError, match=r"hidden_layer=-40 is outside the text encoder.s 9 hidden states: use -1"):
        _encode(manager, format_chat("x"), hidden_layer=-40)


def test_caption_limit_comes_from_the_transformer_config(manager):
    assert caption_limit(manager.pipeline().transformer) == 288  # tiny: axes_lens[0] = 320
    for axis0, expected in ((1536, 1504), (1024, 992), (320, 288), (100, 96)):
        dit = ZImageTransformer2DModel(dim=64, n_layers=1, n_refiner_layers=1, n_heads=2, n_kv_heads=2,
                                       cap_feat_dim=64, axes_dims=[8, 12, 12], axes_lens=[axis0, 64, 64])
        assert caption_limit(dit) == expected


@pytest.mark.parametrize("mode", RESAMPLE_MODES)
def test_long_prompt_modes_return_the_limit(manager, mode):
    encoded = _encode(manager, format_chat(LONG_PROMPT), long_prompt_mode=mode)
    assert encoded.token_count > 288
    assert encoded.embeds.shape == (288, 64)
    assert encoded.long_prompt_applied
    assert f"long_prompt_mode={mode}" in encoded.describe()


def test_long_prompt_modes_differ_and_truncate_keeps_the_head(manager):
    full = _encode(manager, format_chat(LONG_PROMPT), limit=10_000).embeds
    outs = {m: _encode(manager, format_chat(LONG_PROMPT), long_prompt_mode=m).embeds for m in RESAMPLE_MODES}
    torch.testing.assert_close(outs["truncate"], full[:288])
    for a in RESAMPLE_MODES:
        for b in RESAMPLE_MODES:
            if a < b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_short_prompt_is_untouched(manager):
    encoded = _encode(manager, format_chat("a cat"), long_prompt_mode="pool")
    assert not encoded.long_prompt_applied and encoded.embeds.shape[0] == encoded.token_count


def test_generation_reports_long_prompt_handling(manager):
    result = run(manager, small(prompt=LONG_PROMPT, long_prompt_mode="pool"))
    tokens = result.metadata["tokens"]
    assert tokens["count"] > tokens["caption_limit"] == tokens["used"] == 288
    assert "long_prompt_mode=pool" in tokens["long_prompt"]
    assert any("pool" in w for w in result.metadata["warnings"])


def test_resample_definitions():
    x = torch.arange(10, dtype=torch.float32).repeat(3, 1).T  # [10, 3], token i == i
    torch.testing.assert_close(resample(x, 4, "pool")[:, 0], torch.tensor([1.0, 3.0, 6.0, 8.0]))  # bins [0,3) [2,5) [5,8) [7,10)
    interp = resample(x, 4, "interpolate")[:, 0]
    assert torch.all(interp[1:] > interp[:-1]) and interp.mean() == pytest.approx(4.5)  # a ramp stays a ramp

    assert resample(x, 4, "attention_pool").shape == (4, 3)
    with pytest.raises(ValueError, match="long_prompt_mode='median' is unknown"):
        resample(x, 4, "median")


def test_attention_pool_favours_tokens_like_the_mean():
    x = torch.tensor([[1.0, 0.1], [1.0, -0.1]] * 4 + [[-1.0, 3.0]])  # last token is an outlier
    pooled = resample(x, 1, "attention_pool")[0]
    plain = resample(x, 1, "pool")[0]
    assert pooled[1] < plain[1]  # the outlier's direction weighs less than in a plain average


def test_interpolate_uses_every_token_when_shrinking():
    """Linear resampling from 1000 to 20 tokens must not just sample ~40 of them."""
    x = torch.randn(1000, 8, requires_grad=True)
    resample(x, 20, "interpolate").sum().backward()
    assert int((x.grad.abs().sum(dim=1) > 0).sum()) == 1000

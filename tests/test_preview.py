"""The prompt preview: the exact chat text a generation encodes and its token count, from the
tokenizer alone; and its event, which any client can reach, loads no model and takes no huge text."""

import httpx
import pytest

from llm_dit.pipelines.generate import count_prompt
from llm_dit.runtime.models import ModelManager
from llm_dit.pipelines.preview import preview_prompt
from llm_dit.core.request import GenerationRequest
from llm_dit.core.templates import get_template


@pytest.fixture()
def fresh(settings):
    return ModelManager(settings)  # nothing loaded yet


def test_the_preview_is_what_a_generation_encodes_and_loads_no_model(fresh, manager):
    request = GenerationRequest(prompt='a "red" fox', system_prompt="You draw.", thinking_content="snow",
                                assistant_content="Here:", strip_quotes=True, template="Art deco")
    preview = preview_prompt(fresh, request)
    assert not fresh.is_loaded and not fresh.load_counts  # tokenizer only: no pipeline, no text encoder
    counted = count_prompt(manager, request)  # the generation's own path (loads the pipeline)
    assert preview.chat == counted.chat
    assert (preview.tokens, preview.limit) == (counted.encoded.token_count, counted.encoded.caption_limit)
    assert preview.chat.startswith("<|im_start|>system\nYou draw.<|im_end|>")  # own parts win over the template
    assert "<think>\nsnow\n</think>\n\nHere:" in preview.chat and '"' not in preview.chat
    assert preview_prompt(manager, request) == preview  # a loaded pipeline gives the same answer


def test_a_style_template_fills_the_parts_left_empty(fresh):
    preview = preview_prompt(fresh, GenerationRequest(prompt="a fox", template="Art deco"))
    assert get_template("Art deco", "style").system_prompt in preview.chat


def test_the_summary_says_what_happens_past_the_limit(fresh):
    short = preview_prompt(fresh, GenerationRequest(prompt="a fox"))
    assert short.fits and short.summary() == f"{short.tokens} / {short.limit} tokens · fits"
    long = preview_prompt(fresh, GenerationRequest(prompt="a fox in the snow " * 120, long_prompt_mode="truncate"))
    assert long.tokens > long.limit
    assert f"{long.tokens - long.limit:,} over: long_prompt_mode=truncate reduces it to {long.limit}" in long.summary()
    huge = preview_prompt(fresh, GenerationRequest(prompt="ab " * 2600))
    assert huge.tokens > huge.refused_over and "too long: refused above 4,096" in huge.summary()


@pytest.mark.parametrize("overrides, message", [
    ({"prompt": "x" * 8001}, r"prompt is 8,001 characters long"),
    ({"system_prompt": 5}, r"system_prompt=5 is not text"),
    ({"long_prompt_mode": "zip"}, r"long_prompt_mode='zip' is unknown"),
    ({"template": "nope"}, r"template='nope' is not a known"),
])
def test_bad_fields_are_refused_by_name(fresh, overrides, message):
    with pytest.raises(ValueError, match=message):
        preview_prompt(fresh, GenerationRequest(**{"prompt": "a fox", **overrides}))


def test_the_private_event_refuses_huge_text_and_loads_nothing(settings):
    from ui import build_demo, launch_options

    fresh = ModelManager(settings)
    demo = build_demo(settings, fresh)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        deps = [d for d in httpx.get(url + "config").json()["dependencies"] if d.get("api_name", "").startswith(
            "preview_chat")]
        assert len(deps) == 3  # txt2img, img2img, VL
        for dep in deps:
            assert dep["api_visibility"] == "private" and dep["trigger_mode"] == "always_last"
            assert not dep["queue"]
            data = ["x" * 1_000_000] + [""] * 3 + [False, False, "", "interpolate"]
            reply = httpx.post(url + "gradio_api/run/predict", json={"fn_index": dep["id"], "data": data,
                                                                     "session_hash": "remote"}, timeout=30)
            assert "prompt is 1,000,000 characters long: the limit is 8,000" in reply.text
        assert not fresh.is_loaded and not fresh.load_counts
    finally:
        demo.close()


def test_typing_never_downloads_a_checkpoint(monkeypatch, tmp_path):
    """A hub id not downloaded yet: the meter says when the count will come, and the cache stays
    empty (the first generation downloads, with its deadline and progress; typing never does)."""
    from llm_dit.runtime.models import ModelManager
    from llm_dit.pipelines.preview import preview_prompt
    from llm_dit.core.request import GenerationRequest
    from llm_dit.runtime.settings import Settings

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(LookupError, match="appears once the Z-Image checkpoint is downloaded"):
        preview_prompt(ModelManager(Settings()), GenerationRequest(prompt="a fox"))
    assert list(tmp_path.iterdir()) == []


def test_a_partial_snapshot_is_not_taken_for_a_download(monkeypatch, tmp_path):
    """A snapshot folder exists from its first file on (e.g. the tokenizer alone): it is not the
    checkpoint until the files the loaders read are there."""
    from llm_dit.runtime import download

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--Tongyi-MAI--Z-Image-Turbo"
    snapshot = repo / "snapshots" / ("a" * 40)
    (snapshot / "tokenizer").mkdir(parents=True)
    (snapshot / "tokenizer" / "tokenizer.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert download.cached("Tongyi-MAI/Z-Image-Turbo", download.ZIMAGE_FILES) is None
    (snapshot / "model_index.json").write_text("{}")
    assert download.cached("Tongyi-MAI/Z-Image-Turbo", download.ZIMAGE_FILES) == str(snapshot)

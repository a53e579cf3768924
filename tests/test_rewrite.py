"""Prompt rewriting: local Qwen3 (shared weights), local Qwen3-VL, and an OpenAI-compatible server."""

import pytest
from PIL import Image

from llm_dit.core.request import RewriteRequest
from llm_dit.pipelines.rewrite import clean_reply, rewrite, rewrite_stream
from llm_dit.core.templates import get_template

from . import openai_server

CONCISE = get_template("Concise expander", "rewriter")
JSON = get_template("JSON character sheet", "rewriter")


@pytest.fixture(scope="module")
def server():
    srv = openai_server.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def http(url, **kw) -> RewriteRequest:
    return RewriteRequest(**{"prompt": "a fox", "backend": "openai", "base_url": url, "model": "stream",
                             "timeout": 5.0, **kw})


def test_local_qwen3_generates_with_the_text_encoders_own_weights(manager):
    lm = manager.language_model()
    assert lm.model is manager.pipeline().text_encoder  # one copy: the rewriter IS the text encoder
    request = RewriteRequest(prompt="a fox", seed=4, max_new_tokens=24)
    chunks = list(rewrite_stream(manager, request))
    assert len(chunks) > 2 and chunks[-1].metadata["backend"] == "qwen3"
    again = rewrite(manager, request)
    assert again.raw == chunks[-1].raw  # a fixed seed reproduces
    assert rewrite(manager, RewriteRequest(prompt="a fox", seed=5, max_new_tokens=24)).raw != again.raw
    assert manager.load_counts["zimage"] == 1


def test_sampling_presets_are_never_greedy():
    thinking = RewriteRequest().with_preset("thinking")
    assert (thinking.thinking, thinking.temperature, thinking.top_p, thinking.top_k, thinking.min_p) == (
        True, 0.6, 0.95, 20, 0.0)
    instruct = RewriteRequest()
    assert (instruct.temperature, instruct.top_p, instruct.top_k) == (0.7, 0.8, 20)


def test_local_qwen3_vl_rewrites_from_an_image(manager):
    result = rewrite(manager, RewriteRequest(prompt="", template="Image captioner", backend="qwen3_vl",
                                             seed=1, max_new_tokens=16), Image.new("RGB", (128, 128), (9, 99, 9)))
    assert result.raw and result.metadata["model"] == "tiny-random-qwen3-vl"
    assert not manager.vl_loaded  # released after use, like after an extraction


def test_http_backend_streams(server):
    srv, url = server
    chunks = list(rewrite_stream(None, http(url)))
    assert len(chunks) > 3 and chunks[-1].text == openai_server.REPLY
    assert [c.raw for c in chunks[:-1]] == sorted((c.raw for c in chunks[:-1]), key=len)  # growing text
    body = srv.requests[-1]["body"]
    assert body["stream"] and body["messages"][0]["content"] == CONCISE.system_prompt
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.8, 20)


def test_http_backend_sends_images_as_data_urls_and_the_key(server, monkeypatch):
    srv, url = server
    monkeypatch.setenv("MY_KEY", "sk-test")
    result = rewrite(None, http(url, model="image", api_key_env="MY_KEY"), Image.new("RGB", (32, 32)))
    assert result.text == "saw 1 image"
    part = srv.requests[-1]["body"]["messages"][-1]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")
    assert srv.requests[-1]["auth"] == "Bearer sk-test"


def test_http_plain_reply_and_cleaning(server):
    _, url = server
    assert rewrite(None, http(url, model="plain")).text == openai_server.REPLY
    assert rewrite(None, http(url, model="think")).text == openai_server.REPLY
    assert rewrite(None, http(url, model="json", template="JSON character sheet")).text == "Ada, a tall inventor"


@pytest.mark.parametrize("model,message", [
    ("error", r"answered HTTP 500: .*the model crashed"),
    ("malformed", r"sent a malformed stream event"),
    ("empty", r"sent no text, or a reply that is not a chat completion"),
    ("slow", r"timeout: the server at .* did not finish its reply within 1 s"),
])
def test_http_failures_are_explained(server, model, message):
    _, url = server
    with pytest.raises(ValueError, match=message):
        rewrite(None, http(url, model=model, timeout=1.0))


def test_unreachable_server_is_retried_then_explained(monkeypatch):
    import llm_dit.serving.http

    monkeypatch.setattr(llm_dit.serving.http, "BACKOFF_S", 0.01)
    with pytest.raises(ValueError, match=r"base_url: cannot connect to the server at http://127.0.0.1:9/v1 after 4 tries"):
        rewrite(None, http("http://127.0.0.1:9/v1"))


def test_clean_reply():
    assert clean_reply('<think>hmm</think>\n"A fox."', CONCISE) == "A fox."
    with pytest.raises(ValueError, match="no usable text"):
        clean_reply("<think>still thinking, cut off", CONCISE)
    with pytest.raises(ValueError, match="no valid ```json block"):
        clean_reply("no json here", JSON)
    with pytest.raises(ValueError, match="has no `revised_prompt`"):
        clean_reply('```json\n{"name": "x"}\n```', JSON)


@pytest.mark.parametrize("overrides,image,message", [
    ({"template": "Nope"}, None, r"template='Nope' is not a known rewriter template"),
    ({"template": "Swiss poster"}, None, r"not a known rewriter template"),
    ({}, Image.new("RGB", (8, 8)), r"image: the qwen3 backend reads text only"),
    ({"max_new_tokens": 5000}, None, r"max_new_tokens=5000 is out of range: use a value from 16 to 4096"),
    ({"prompt": " "}, None, r"prompt is empty"),
    ({"backend": "gpt"}, None, r"backend='gpt' is unknown"),
    ({"backend": "openai", "base_url": "ftp://x", "model": "m"}, None, r"base_url='ftp://x' is not an http\(s\) URL"),
    ({"backend": "openai", "model": ""}, None, r"model is empty"),
])
def test_bad_rewrite_input(manager, overrides, image, message):
    with pytest.raises(ValueError, match=message):
        rewrite(manager, RewriteRequest(**{"prompt": "a fox", **overrides}), image)


@pytest.mark.parametrize("backend", ["qwen3", "qwen3_vl"])
def test_a_stream_closed_from_another_thread_releases_everything(settings, backend):
    """Gradio resumes and cancels streams from different threads: nothing may stay locked."""
    import threading

    from llm_dit.runtime.models import ModelManager

    fresh = ModelManager(settings)
    image = Image.new("RGB", (64, 64)) if backend == "qwen3_vl" else None
    stream = rewrite_stream(fresh, RewriteRequest(prompt="a fox", backend=backend, seed=1, max_new_tokens=4096),
                            image)
    stepper = threading.Thread(target=lambda: [next(stream) for _ in range(3)])
    stepper.start()
    stepper.join()
    closer = threading.Thread(target=stream.close)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive()  # the generation stopped at the next token
    assert not fresh.vl_loaded and not fresh.rewrite_lock.locked()
    done = []
    again = threading.Thread(target=lambda: done.append(rewrite(
        fresh, RewriteRequest(prompt="a fox", backend=backend, seed=2, max_new_tokens=16), image)))
    again.start()
    again.join(timeout=60)
    assert done and done[0].metadata["backend"] == backend

"""Split across machines: one instance encodes (text and VL) for another, over loopback HTTP."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image
from safetensors import safe_open

from llm_dit.pipelines.recipe import condition, vl_generate
from llm_dit.pipelines.generate import encode_prompt, run
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.remote import RemoteEncoderError
from llm_dit.core.request import VLRequest
from ui import build_demo
from tests.conftest import small


def _serve(settings, manager=None):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def encoder(settings, manager):
    """The encoding instance: an ordinary app with every model."""
    demo, url = _serve(settings, manager)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def split(settings, encoder):
    """A generating instance that loads neither Qwen3-4B nor Qwen3-VL."""
    return ModelManager(replace(settings, text_encoder_url=encoder, vl_url=encoder))


@pytest.fixture
def reference(tmp_path):
    image = Image.new("RGB", (64, 64), (200, 60, 20))
    image.paste((20, 60, 200), (0, 32, 64, 64))
    path = tmp_path / "reference.png"
    image.save(path)
    return str(path)


def _vl(**overrides):
    values = {"prompt": "a harbour at dusk", "height": 64, "width": 64, "seed": 11, "strength": 0.75}
    return VLRequest(**{**values, **overrides})


def test_remote_text_embeddings_and_images_are_bit_identical(manager, split):
    request = small(prompt="a lighthouse in a storm", system_prompt="You draw.", seed=4)
    local, there = encode_prompt(manager, request), encode_prompt(split, request)
    assert there.chat == local.chat and torch.equal(there.prompt_embeds, local.prompt_embeds)
    assert split._lm is None and "text_encoder" not in [p["component"] for p in split.memory_report()]
    a, b = run(manager, request), run(split, request)
    assert (torch.tensor(list(a.image.getdata())) == torch.tensor(list(b.image.getdata()))).all()
    assert b.metadata["remote"] == {"text_encoder": split.settings.text_encoder_url} and "remote" not in a.metadata


def test_remote_text_encodings_are_cached(split):
    request = small(prompt="a cached prompt for the remote encoder")
    before = split.text_cache.misses
    encode_prompt(split, request)
    encode_prompt(split, request)
    assert split.text_cache.misses == before + 1


def test_remote_vl_blend_and_image_are_bit_identical(manager, split, reference):
    request = _vl(normalization="hybrid", outlier_mode="clamp")  # per-dim stats come from the remote encoder
    local, there = condition(manager, request, [reference]), condition(split, request, [reference])
    assert torch.equal(local.encoding.prompt_embeds, there.encoding.prompt_embeds)
    for a, b in zip(local.extractions, there.extractions):
        assert torch.equal(a.embeds, b.embeds) and torch.equal(a.is_image, b.is_image) and a.counts == b.counts
    assert split.load_counts["vl"] == 0 and not split.vl_loaded
    a, b = vl_generate(manager, request, [reference]), vl_generate(split, request, [reference])
    assert list(a.image.getdata()) == list(b.image.getdata())
    assert b.metadata["vl"]["vl_model"] == split.settings.vl_url == b.metadata["remote"]["vl"]


def test_remote_dual_composition_sends_a_text_only_extraction(manager, split, reference):
    request = _vl(vl_composition="dual", image_text_ratio=0.6)
    local, there = condition(manager, request, [reference]), condition(split, request, [reference])
    assert torch.equal(local.encoding.prompt_embeds, there.encoding.prompt_embeds)


def test_encode_endpoint_returns_safetensors(encoder, tmp_path):
    client = Client(encoder, verbose=False, download_files=str(tmp_path))
    path = client.predict(prompt="a fox", hidden_layer=-3, api_name="/encode")
    with safe_open(path, "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        embeds = f.get_tensor("embeds")
    assert path.endswith(".safetensors") and embeds.shape == (meta["token_count"], meta["hidden_size"])
    assert "a fox" in meta["chat"]
    with pytest.raises(Exception, match="hidden_layer=-40 is out of range"):
        client.predict(prompt="a fox", hidden_layer=-40, api_name="/encode")


def test_vl_encode_endpoint_checks_its_input(encoder, reference, tmp_path):
    client = Client(encoder, verbose=False, download_files=str(tmp_path))
    path = client.predict(reference=handle_file(reference), vl_text="", token_mode="image_only",
                          api_name="/vl_encode")
    with safe_open(path, "pt") as f:
        assert f.get_tensor("is_image").all()
    with pytest.raises(Exception, match="reference and vl_text are both empty"):
        client.predict(reference=None, vl_text="", api_name="/vl_encode")


def test_unreachable_encoder_names_the_url(settings):
    url = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    lonely = ModelManager(replace(settings, text_encoder_url=url))
    with pytest.raises(RemoteEncoderError, match="text encoder at http://127.0.0.1:9/ could not be used"):
        encode_prompt(lonely, small())


def test_rewriting_with_the_remote_text_encoder_is_explained(split):
    with pytest.raises(ValueError, match="does not load .* encodes at http://127.0.0.1"):
        split.language_model()


def test_mismatched_encoders_name_the_url(settings, zimage_dir, tmp_path, reference):
    from transformers import Qwen3Config, Qwen3Model

    from llm_dit.runtime.tiny import _build_qwen3_vl

    # A Z-Image folder whose text encoder is narrower than the DiT's caption width.
    other = tmp_path / "zimage-narrow"
    shutil.copytree(zimage_dir, other, ignore=shutil.ignore_patterns("text_encoder"))
    config = Qwen3Config.from_pretrained(zimage_dir / "text_encoder")
    config.hidden_size, config.intermediate_size, config.head_dim = 32, 64, 16
    Qwen3Model(config).save_pretrained(other / "text_encoder")
    narrow_vl = tmp_path / "vl-narrow"
    _build_qwen3_vl(narrow_vl, 0, hidden=32)
    demo, url = _serve(replace(settings, tiny=False, model_path=str(other), vl_model_path=str(narrow_vl)))
    try:
        user = ModelManager(replace(settings, text_encoder_url=url, vl_url=url))
        with pytest.raises(RemoteEncoderError, match=f"text encoder at {url} .*hidden size 32.*needs hidden size 64"):
            encode_prompt(user, small())
        text_only = ModelManager(replace(settings, vl_url=url))
        with pytest.raises(RemoteEncoderError, match=f"VL model at {url} .*hidden size 32"):
            condition(text_only, _vl(), [reference])
    finally:
        demo.close()


def test_hosted_instances_keep_the_encoder_address_to_themselves(settings):
    lonely = ModelManager(replace(settings, hosting="hosted", text_encoder_url="http://127.0.0.1:9/"))
    with pytest.raises(RemoteEncoderError) as info:
        encode_prompt(lonely, small())
    assert "the --text-encoder-url address could not be used" in str(info.value)
    assert "127.0.0.1" not in str(info.value) and "127.0.0.1" not in lonely.text_encoder_id

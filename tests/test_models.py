"""Model manager and tiny checkpoints: lazy, once, shared weights, real layouts, clear errors."""

import json
from dataclasses import replace
import threading

import pytest
import torch
from safetensors.torch import load_file

from llm_dit.runtime.models import ModelLoadError, ModelManager, module_bytes
from llm_dit.runtime.settings import Settings
from llm_dit.runtime.tiny import ensure_tiny_qwen3_vl, ensure_tiny_zimage


def test_nothing_loads_until_asked(settings):
    fresh = ModelManager(settings)
    assert not fresh.is_loaded and fresh.memory_report() == [] and fresh.load_counts["zimage"] == 0


def test_concurrent_first_use_loads_once(settings):
    fresh = ModelManager(settings)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fresh.pipeline())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh.load_counts["zimage"] == 1
    assert all(p is results[0] for p in results)


def test_text_encoder_is_one_model_for_encoding_and_generation(manager):
    pipe, lm = manager.pipeline(), manager.language_model()
    assert pipe.text_encoder is lm.model
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()  # tied head
    ids = pipe.tokenizer("a red", return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


def test_views_share_the_loaded_modules(manager):
    pipe = manager.pipeline()
    for mode in ("txt2img", "img2img"):
        assert manager.view(mode, pipe.scheduler).transformer is pipe.transformer


def test_bfloat16_stays_bfloat16(settings):
    """The views share the loaded modules and never cast them (from_pipe would cast to float32)."""

    from llm_dit.pipelines.generate import txt2img

    from .conftest import small

    bf16 = ModelManager(replace(settings, dtype="bfloat16"))
    result = txt2img(bf16, small())
    assert result.image.size == (64, 64)
    assert {r["dtype"] for r in bf16.memory_report()} == {"bfloat16"}


def test_memory_report(manager):
    manager.language_model()  # the text encoder loads on first use
    report = {r["component"]: r for r in manager.memory_report()}
    assert set(report) == {"text_encoder", "transformer", "vae"}
    dit = manager.pipeline().transformer
    assert report["transformer"]["bytes"] == sum(p.numel() * p.element_size() for p in dit.parameters()) + sum(
        b.numel() * b.element_size() for b in dit.buffers())
    assert report["text_encoder"]["class"] == "Qwen3ForCausalLM" and report["vae"]["device"] == "cpu"
    lm = manager.language_model()
    # parameters() yields the tied embedding/head once; module_bytes must count it once too
    expected = sum(t.numel() * t.element_size() for t in list(lm.parameters()) + list(lm.buffers()))
    assert module_bytes(lm) == expected


def test_missing_local_folder_says_where_and_how(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(ModelLoadError) as err:
        ModelManager(Settings(model_path=str(missing))).pipeline()
    text = str(err.value)
    assert "Z-Image checkpoint" in text and str(missing) in text and "--tiny" in text
    assert "LLM_DIT_MODEL_PATH" in text


def test_unreachable_hub_says_which_model_and_how(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as err:
        ModelManager(Settings(model_path="Tongyi-MAI/Z-Image-Turbo")).pipeline()
    text = str(err.value)
    assert "hub id 'Tongyi-MAI/Z-Image-Turbo'" in text and str(tmp_path) in text
    assert "hf download Tongyi-MAI/Z-Image-Turbo" in text and "--model-path" in text and "--tiny" in text


def test_folder_without_weights_is_explained(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="Could not load the Z-Image checkpoint from the local folder"):
        ModelManager(Settings(model_path=str(tmp_path))).pipeline()


def test_tiny_zimage_has_the_hub_layout(zimage_dir):
    index = json.loads((zimage_dir / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "Qwen3Model"]
    assert (zimage_dir / "text_encoder" / "model.safetensors.index.json").exists()
    assert (zimage_dir / "transformer" / "diffusion_pytorch_model.safetensors.index.json").exists()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        assert (zimage_dir / "tokenizer" / name).exists()
    assert not list(zimage_dir.rglob("*.bin"))  # safetensors only


def test_tiny_tokenizer_has_qwen_special_token_order(manager):
    tok = manager.pipeline().tokenizer
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"])
    base = ids[0]
    assert ids == [base, base + 1, base + 2, base + 24, base + 25]  # 151643.. / 151667, 151668 in Qwen
    assert len(tok("\n\n", add_special_tokens=False).input_ids) == 1  # one token, as Qwen's 271


def test_tiny_builds_are_deterministic(tmp_path):
    a = ensure_tiny_zimage(seed=5, cache_dir=tmp_path / "a")
    b = ensure_tiny_zimage(seed=5, cache_dir=tmp_path / "b")
    for rel in ("vae/diffusion_pytorch_model.safetensors",):
        wa, wb = load_file(a / rel), load_file(b / rel)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer" / "tokenizer.json").read_text() == (b / "tokenizer" / "tokenizer.json").read_text()
    assert ensure_tiny_zimage(seed=5, cache_dir=tmp_path / "a") == a  # built once, then reused


def test_tiny_qwen3_vl_loads_with_the_real_classes(tiny_cache):
    from PIL import Image
    from transformers import Qwen3VLForConditionalGeneration

    from llm_dit.conditioning.vl import ImageOnlyProcessor

    folder = ensure_tiny_qwen3_vl(cache_dir=tiny_cache)
    for name in ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json",
                 "model.safetensors.index.json", "vocab.json", "merges.txt"):
        assert (folder / name).exists()

    processor = ImageOnlyProcessor.from_pretrained(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat"}]}],
        add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    assert states[-6].shape[-1] == 64 == model.config.text_config.hidden_size


def test_status_follows_loads_unloads_and_cache_clears(settings):
    from PIL import Image

    from llm_dit.pipelines.recipe import vl_generate
    from llm_dit.core.request import VLRequest

    fresh = ModelManager(replace(settings, vl_auto_unload=False))
    assert fresh.status()["models"] == []
    vl_generate(fresh, VLRequest(prompt="a fox", height=64, width=64), [Image.new("RGB", (128, 128))])
    status = fresh.status()
    held = {m["component"]: m["bytes"] for m in status["models"]}
    assert set(held) == {"text_encoder", "transformer", "vae", "vl"} and min(held.values()) > 0
    assert status["vl_cache"]["entries"] == 1 and status["text_cache"]["entries"] == 1
    assert [s["name"] for s in status["last_timeline"]][-2:] == ["denoise", "decode"]
    fresh.unload()
    fresh.clear_caches()
    status = fresh.status()
    assert status["models"] == [] and status["vl_cache"]["entries"] == 0 == status["text_cache"]["entries"]


def test_unloading_during_a_job_does_not_break_it(settings):
    import time

    from llm_dit.pipelines.generate import txt2img
    from llm_dit.core.request import GenerationRequest

    fresh = ModelManager(settings)
    fresh.pipeline()
    results, errors = [], []

    def job():
        try:
            results.append(txt2img(fresh, GenerationRequest(prompt="a fox", height=768, width=768, seed=1)))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    worker = threading.Thread(target=job)
    worker.start()
    while not fresh.generation_lock.locked() and worker.is_alive():
        time.sleep(0.005)
    fresh.unload()  # waits for the running generation
    worker.join()
    assert not errors and results[0].image.size == (768, 768)
    assert not fresh.is_loaded and fresh.status()["models"] == []

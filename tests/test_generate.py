"""Generation: reproducibility, PNG metadata round trip, LoRA, CFG, and every bad input."""

import numpy as np
import pytest
import torch
from diffusers import ZImagePipeline, ZImageTransformer2DModel
from PIL import Image

from llm_dit.pipelines.generate import img2img, run, txt2img
from llm_dit.core.pnginfo import request_from_png
from llm_dit.core.images import A1111_KEY, JSON_KEY, read_png_text
from llm_dit.core.request import GenerationRequest

from .conftest import small


def pixels(result):
    return np.asarray(result.image).astype(int)


def test_same_request_and_seed_gives_the_same_image(manager):
    a, b = txt2img(manager, small(seed=11)), txt2img(manager, small(seed=11))
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(txt2img(manager, small(seed=12))))


def test_random_seed_is_returned_and_reproduces(manager):
    first = txt2img(manager, small(seed=-1))
    assert 0 <= first.seed < 2**32 and first.metadata["request"]["seed"] == first.seed
    again = txt2img(manager, small(seed=first.seed))
    assert np.array_equal(pixels(first), pixels(again))


def test_prompt_changes_the_image(manager):
    assert not np.array_equal(pixels(txt2img(manager, small())), pixels(txt2img(manager, small(prompt="a blue boat"))))


def test_metadata_records_what_ran(manager):
    meta = txt2img(manager, small(num_inference_steps=4)).metadata
    assert meta["forwards"] == 4 and len(meta["sigmas"]) == 4 and meta["start_sigma"] == 1.0
    assert meta["model"] == "tiny-random-zimage"
    assert set(meta["versions"]) == {"llm_dit", "torch", "diffusers", "transformers"}
    assert meta["tokens"]["count"] == meta["tokens"]["used"] > 0
    assert {"encode", "denoise", "decode", "total"} <= set(meta["timings"])
    assert meta["chat_text"].startswith("<|im_start|>user\na red fox")


def test_png_metadata_regenerates_the_image(manager, tmp_path):
    result = txt2img(manager, small(seed=-1, shift=4.0, num_inference_steps=5, hidden_layer=-3,
                                    system_prompt="Paint it.", force_think_block=True))
    path = result.save(tmp_path)
    text = read_png_text(path)
    assert JSON_KEY in text and A1111_KEY in text
    assert f"Seed: {result.seed}" in text[A1111_KEY] and "Size: 64x64" in text[A1111_KEY]
    request = request_from_png(path)
    assert request.seed == result.seed and request.hidden_layer == -3
    assert np.array_equal(pixels(txt2img(manager, request)), np.asarray(Image.open(path)).astype(int))


def test_img2img_png_metadata_regenerates_with_the_same_init(manager, tmp_path):
    init = Image.new("RGB", (80, 48), (10, 200, 90))
    result = img2img(manager, small(strength=0.6), init)
    path = result.save(tmp_path)
    assert result.metadata["init_image"]["size"] == [80, 48]
    assert np.array_equal(pixels(img2img(manager, request_from_png(path), init)), np.asarray(Image.open(path)).astype(int))


def test_png_without_metadata_is_explained(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="the PNG has no generation metadata"):
        request_from_png(tmp_path / "plain.png")


def test_guidance_uses_the_negative_prompt(manager):
    base = pixels(txt2img(manager, small(guidance_scale=3.0, negative_prompt="blurry")))
    other = pixels(txt2img(manager, small(guidance_scale=3.0, negative_prompt="dark night")))
    assert not np.array_equal(base, other)
    # with guidance 0 the negative prompt does nothing
    assert np.array_equal(pixels(txt2img(manager, small(negative_prompt="blurry"))),
                          pixels(txt2img(manager, small(negative_prompt="dark night"))))


def test_lora_changes_the_output_and_scale_zero_does_not(manager, lora_file):
    base = pixels(txt2img(manager, small()))
    with_lora = pixels(txt2img(manager, small(loras=f"{lora_file}:1.0")))
    at_zero = pixels(txt2img(manager, small(loras=f"{lora_file}:0")))
    assert not np.array_equal(base, with_lora)
    assert np.array_equal(base, at_zero)
    assert np.array_equal(base, pixels(txt2img(manager, small())))  # unused LoRAs are switched off
    meta = txt2img(manager, small(loras=f"{lora_file}:0.5")).metadata
    assert meta["loras"] == [{"name": "pytorch_lora_weights", "scale": 0.5}]  # a name, never a server path


def test_attention_backend_is_applied_and_reset(manager):
    from llm_dit.pipelines.generate import attention_backend_of

    dit = manager.pipeline().transformer
    base = pixels(txt2img(manager, small()))
    assert np.array_equal(base, pixels(txt2img(manager, small(attention_backend="_native_math"))))
    processors = [m.processor for m in dit.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")]
    assert processors and {p._attention_backend.value for p in processors} == {"_native_math"}
    txt2img(manager, small())
    assert attention_backend_of(dit) == "native"


def test_an_attention_backend_that_cannot_run_here_is_refused(manager):
    from llm_dit.pipelines.generate import attention_backend_of

    with pytest.raises(ValueError, match=r"attention_backend='flash' cannot run here: use one of native"):
        txt2img(manager, small(attention_backend="flash"))  # no flash-attn on this machine
    assert attention_backend_of(manager.pipeline().transformer) == "native"
    assert txt2img(manager, small()).image.size == (64, 64)


def _corrupt(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return str(path)


BAD = [
    ({"height": 100}, r"height=100 is not a multiple of 16: use 96 or 112"),
    ({"width": 1000}, r"width=1000 is not a multiple of 16: use 992 or 1008"),
    ({"num_inference_steps": 0}, r"num_inference_steps=0 is out of range: use a value from 1 to 100"),
    ({"num_inference_steps": 500}, r"num_inference_steps=500 is out of range"),
    ({"prompt": "   "}, r"prompt is empty"),
    ({"seed": 2**64}, r"seed=18446744073709551616 is out of range: use -1 \(random\) or 0 to 2\*\*64-1"),
    ({"seed": -5}, r"seed=-5 is out of range"),
    ({"loras": "/nowhere/style.safetensors:0.8"}, r"loras: '/nowhere/style.safetensors' does not exist"),
    ({"long_prompt_mode": "squash"}, r"long_prompt_mode='squash' is unknown: use one of truncate"),
    ({"guidance_scale": -1.0}, r"guidance_scale=-1.0 is out of range"),
    ({"shift": 0.0}, r"shift=0.0 is out of range"),
    ({"attention_backend": "warp"}, r"attention_backend='warp' cannot run here: use one of native"),
    ({"height": 4096, "width": 4096}, r"height=4096 and width=4096 are larger than this DiT supports "
                                      r"\(at most 2048×2048, height×width\): use 2048×2048"),
    ({"height": 512, "width": 4096}, r"^width=4096 is larger than this DiT supports \(at most 2048×2048, "
                                     r"height×width\): use 512×2048"),
    ({"height": 100, "width": 1001}, r"height=100 and width=1001 are not multiples of 16: the nearest valid size "
                                     r"is 96×1008"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split("=")[0].split(":")[0] for _, m in BAD])
def test_bad_input_is_explained_and_the_next_request_works(manager, overrides, message):
    with pytest.raises(ValueError, match=message):
        txt2img(manager, small(**overrides))
    assert txt2img(manager, small()).image.size == (64, 64)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_out_of_range(manager, strength):
    with pytest.raises(ValueError, match=rf"strength={strength} is out of range: use a value from 0.0 to 1.0"):
        img2img(manager, small(strength=strength), Image.new("RGB", (64, 64)))


def test_unreadable_images_are_explained(manager, tmp_path):
    with pytest.raises(ValueError, match=r"image: .*broken.png is not a readable image"):
        img2img(manager, small(), _corrupt(tmp_path))
    with pytest.raises(ValueError, match=r"image: file .*missing.png does not exist"):
        img2img(manager, small(), str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match=r"image: img2img needs an init image"):
        img2img(manager, small(), None)
    assert img2img(manager, small(), Image.new("RGB", (64, 64))).image.size == (64, 64)


def test_request_round_trips_through_a_dict():
    request = small(loras="a.safetensors:0.5")
    again, unknown = GenerationRequest.from_dict({**request.to_dict(), "sampler": "dpm"})
    assert again == request and unknown == {"sampler": "dpm"}


def test_run_without_image_is_txt2img(manager):
    assert run(manager, small()).metadata["mode"] == "txt2img"


def test_a_repeated_prompt_is_not_re_encoded(settings):
    from llm_dit.runtime.models import ModelManager

    fresh = ModelManager(settings)
    first = txt2img(fresh, small(seed=1))
    encodes = fresh.text_cache.misses
    second = txt2img(fresh, small(seed=2))
    assert fresh.text_cache.misses == encodes and fresh.text_cache.hits >= 1
    assert second.metadata["tokens"] == first.metadata["tokens"]
    txt2img(fresh, small(prompt="something else"))
    assert fresh.text_cache.misses == encodes + 1

"""VL extraction and VL-conditioned generation on the tiny real Qwen3-VL and Z-Image models."""

import gc
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from llm_dit.conditioning import blend
from llm_dit.pipelines.recipe import condition, export, extraction_params, vl_generate
from llm_dit.pipelines.generate import img2img, txt2img
from llm_dit.core.pnginfo import request_from_png
from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import GenerationRequest, VLRequest
from llm_dit.conditioning.vl import ExtractionParams, build_inputs, extract, token_masks

RED = Image.new("RGB", (128, 128), (210, 40, 30))
BLUE = Image.new("RGB", (128, 96), (20, 60, 220))
SMALL = {"prompt": "a fox in the snow", "height": 64, "width": 64, "seed": 5}


def vl_request(**overrides) -> VLRequest:
    return VLRequest(**{**SMALL, **overrides})


def pixels(result):
    return np.asarray(result.image).astype(int)


def test_token_masks_are_the_image_pad_positions(manager):
    with manager.vl_model() as (model, processor):
        inputs = build_inputs(processor, RED, ExtractionParams(text="a cat"), 64 * 64, 1024 * 1024)
        masks = token_masks(inputs["input_ids"], model.config)
        ids = inputs["input_ids"][0]
        assert torch.equal(torch.nonzero(masks["image"]).flatten(), torch.nonzero(ids == model.config.image_token_id).flatten())
        merge = processor.image_processor.merge_size
        assert int(masks["image"].sum()) == int(inputs["image_grid_thw"].prod()) // merge**2 == 16
        assert int(masks["marker"].sum()) == 2


def test_layer_is_that_hidden_state(manager):
    params = ExtractionParams(text="a cat", hidden_layer=-3)
    ex = extract(manager, RED, params)
    with manager.vl_model() as (model, processor):
        inputs = build_inputs(processor, RED, params, manager.settings.vl_min_pixels, manager.settings.vl_max_pixels)
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(ex.embeds, states[-3][0])


def test_token_modes_select_by_type(manager):
    full = extract(manager, RED, ExtractionParams(text="a cat"))
    counts = full.counts
    sizes = {m: extract(manager, RED, ExtractionParams(text="a cat", token_mode=m)).embeds.shape[0]
             for m in ("image_only", "image_no_markers", "text_only")}
    assert full.embeds.shape[0] == counts["total"]
    assert sizes == {"image_only": counts["image"] + 2, "image_no_markers": counts["image"],
                     "text_only": counts["total"] - counts["image"] - 2}
    assert counts["template"] + counts["text"] + counts["image"] + counts["marker"] == counts["total"]


def test_per_token_type_layers(manager):
    mixed = extract(manager, RED, ExtractionParams(text="a cat", hidden_layer=-6, text_hidden_layer=-2))
    image_layer = extract(manager, RED, ExtractionParams(text="a cat", hidden_layer=-6))
    text_layer = extract(manager, RED, ExtractionParams(text="a cat", hidden_layer=-2))
    assert torch.equal(mixed.part(image=True), image_layer.part(image=True))
    assert torch.equal(mixed.part(image=False), text_layer.part(image=False))


def test_think_block_injects_four_tokens(manager):
    plain = extract(manager, RED, ExtractionParams(text="a cat"))
    think = extract(manager, RED, ExtractionParams(text="a cat", think_block=True))
    assert think.counts["total"] == plain.counts["total"] + 4
    assert think.counts["template"] == plain.counts["template"] + 4


def test_cache_hit_is_bit_identical_and_loads_nothing(settings):
    fresh = ModelManager(settings)
    first = extract(fresh, RED, ExtractionParams(text="a red square"))
    loads = fresh.load_counts["vl"]
    again = extract(fresh, RED.copy(), ExtractionParams(text="a red square"))
    assert again.cached and not first.cached
    assert torch.equal(first.embeds, again.embeds)
    assert fresh.load_counts["vl"] == loads and not fresh.vl_loaded
    other = extract(fresh, RED, ExtractionParams(text="a red square", hidden_layer=-5))
    assert not other.cached and other.key != first.key


def test_auto_unload_releases_the_model(settings):
    keep = ModelManager(replace(settings, vl_auto_unload=False))
    extract(keep, RED, ExtractionParams(text="x"))
    report = {r["component"]: r for r in keep.memory_report()}
    assert report["vl"]["bytes"] > 0 and keep.vl_loaded
    ref = weakref.ref(keep._vl[0])
    keep.unload_vl()
    gc.collect()
    assert ref() is None and "vl" not in {r["component"] for r in keep.memory_report()}

    auto = ModelManager(settings)
    with auto.vl_session():
        extract(auto, RED, ExtractionParams(text="y"))
        ref = weakref.ref(auto._vl[0])
        held = auto.memory_report()[-1]
    assert held["component"] == "vl" and held["bytes"] > 0
    assert ref() is None and not auto.vl_loaded  # released at the session's end, memory returned
    assert "vl" not in {r["component"] for r in auto.memory_report()}


def test_one_request_loads_the_vl_model_once(settings):
    fresh = ModelManager(settings)
    condition(fresh, vl_request(vl_composition="dual", blend_mode="style_delta"), [RED, BLUE])
    assert fresh.load_counts["vl"] == 1 and not fresh.vl_loaded
    condition(fresh, vl_request(vl_composition="dual", blend_mode="style_delta"), [RED, BLUE])
    assert fresh.load_counts["vl"] == 1  # all cached: no load at all


def test_a_bad_layer_is_refused_before_loading(settings):
    fresh = ModelManager(settings)
    with pytest.raises(ValueError, match="vl_hidden_layer=-30 is outside"):
        condition(fresh, vl_request(vl_hidden_layer=-30), [RED])
    assert fresh.load_counts["vl"] == 0


def test_alpha_zero_is_the_text_only_image(manager):
    vl = vl_generate(manager, vl_request(alpha=0.0, strength=0.6), [RED])
    plain = img2img(manager, GenerationRequest(**SMALL, strength=0.6), RED)
    assert np.array_equal(pixels(vl), pixels(plain))
    cond = condition(manager, vl_request(alpha=0.0), [RED])
    assert torch.equal(cond.encoding.prompt_embeds, cond.encoding.encoded.embeds.float())


def test_alpha_one_is_the_aligned_scaled_vl(manager):
    request = vl_request(alpha=1.0, target_std=3.0)  # pure VL: no text encoder, scaled to the target
    cond = condition(manager, request, [RED])
    ex = extract(manager, RED, extraction_params(request))
    length = cond.encoding.encoded.token_count
    aligned = blend.align_length(ex.embeds, length, "interpolate")
    expected, _ = blend.align_statistics(aligned, aligned, manager.reference_stats(-2), target_std=3.0)
    torch.testing.assert_close(cond.encoding.prompt_embeds, expected)
    assert cond.report["effective_alpha"] == 1.0


def test_strength_one_is_txt2img_from_the_blend(manager):
    result = vl_generate(manager, vl_request(strength=1.0), [RED])
    assert result.metadata["forwards"] == 8 and "init_image" not in result.metadata


def test_structure_image_feeds_the_init_latents(manager):
    base = vl_generate(manager, vl_request(), [RED])
    structured = vl_generate(manager, vl_request(), [RED], structure_image=BLUE)
    assert structured.metadata["init_image"]["size"] == [128, 96]
    assert structured.metadata["vl"]["references"] == base.metadata["vl"]["references"]
    assert not np.array_equal(pixels(base), pixels(structured))


BASE = vl_request()
OPTIONS = {
    "token_mode=image_only": {"token_mode": "image_only"},
    "token_mode=image_no_markers": {"token_mode": "image_no_markers"},
    "token_mode=text_only": {"token_mode": "text_only"},
    "vl_hidden_layer": {"vl_hidden_layer": -3},
    "vl_text_hidden_layer": {"vl_text_hidden_layer": -2},
    "vl_think_block": {"vl_think_block": True},
    "vl_system_prompt": {"vl_system_prompt": "Describe the style."},
    "vl_text": {"vl_use_prompt": False, "vl_text": "an oil painting"},
    "vl_composition=intra_vl": {"vl_composition": "intra_vl"},
    "vl_composition=dual": {"vl_composition": "dual"},
    "alpha": {"alpha": 0.6},
    "blend_mode=linear_rms": {"blend_mode": "linear_rms"},
    "blend_mode=adain": {"blend_mode": "adain"},
    "blend_mode=adain_per_dim": {"blend_mode": "adain_per_dim"},
    "blend_mode=style_delta": {"blend_mode": "style_delta"},
    "length_mode=pool": {"length_mode": "pool"},
    "length_mode=truncate": {"length_mode": "truncate"},
    "scale_to_text": {"scale_to_text": False},
    "target_std": {"target_std": 3.0},
    "normalization=per_dim": {"normalization": "per_dim"},
    "normalization=hybrid": {"normalization": "hybrid"},
    "outlier_mode": {"outlier_mode": "zero", "outlier_threshold": 1.5},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_changes_the_conditioning(manager, name):
    base = condition(manager, BASE, [RED])
    changed = condition(manager, replace(BASE, **OPTIONS[name]), [RED])
    assert not torch.allclose(base.encoding.prompt_embeds, changed.encoding.prompt_embeds)
    assert torch.equal(base.encoding.encoded.embeds, changed.encoding.encoded.embeds)  # text side untouched


def test_image_text_ratio_and_reference_weights(manager):
    a = condition(manager, vl_request(vl_composition="intra_vl", image_text_ratio=0.2), [RED])
    b = condition(manager, vl_request(vl_composition="intra_vl", image_text_ratio=0.8), [RED])
    assert not torch.allclose(a.encoding.prompt_embeds, b.encoding.prompt_embeds)
    red_only = condition(manager, vl_request(reference_weights="1, 0"), [RED, BLUE])
    single = condition(manager, vl_request(), [RED])
    torch.testing.assert_close(red_only.encoding.prompt_embeds, single.encoding.prompt_embeds)
    both = condition(manager, vl_request(reference_weights="1, 1"), [RED, BLUE])
    assert not torch.allclose(both.encoding.prompt_embeds, single.encoding.prompt_embeds)


@pytest.mark.parametrize("strength", [0.9, 1.0])
def test_metadata_and_png_regenerate_a_vl_image(manager, tmp_path, strength):
    result = vl_generate(manager, vl_request(seed=-1, alpha=0.4, blend_mode="adain", strength=strength), [RED])
    meta = result.metadata["vl"]
    assert {"effective_alpha", "stats", "extractions", "references"} <= set(meta)
    assert meta["stats"]["vl_before_scaling"]["std"] != meta["stats"]["vl_after_scaling"]["std"]
    request = request_from_png(result.save(tmp_path))
    assert isinstance(request, VLRequest) and request.blend_mode == "adain" and request.alpha == 0.4
    assert request.strength == strength
    assert np.array_equal(pixels(vl_generate(manager, request, [RED])), pixels(result))


def test_export_holds_embeddings_stats_and_parameters(manager, tmp_path):
    from safetensors import safe_open

    request = vl_request(vl_composition="dual")
    cond = condition(manager, request, [RED])
    path = export(cond, request, tmp_path / "c.safetensors")
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) >= {"prompt_embeds", "text_embeds", "extraction_0.embeds", "extraction_1.embeds"}
        assert torch.equal(f.get_tensor("prompt_embeds"), cond.encoding.prompt_embeds)
        assert '"vl_composition": "dual"' in f.metadata()["request"]
        assert "effective_alpha" in f.metadata()["report"]


def test_long_prompt_blend_stays_within_the_caption_limit(manager):
    long = " ".join(["a fox with golden fur walking in deep snow under a grey sky"] * 40)
    result = vl_generate(manager, vl_request(prompt=long), [RED])
    assert result.metadata["tokens"]["used"] == result.metadata["tokens"]["caption_limit"] == 288


def _corrupt(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return str(path)


@pytest.mark.parametrize("overrides,refs,message", [
    ({}, [], r"references: no reference image"),
    ({"alpha": 1.5}, [RED], r"alpha=1.5 is out of range: use a value from 0.0 to 1.0"),
    ({"reference_weights": "1, -1"}, [RED, BLUE], r"reference_weights='1, -1': weights must be ≥ 0"),
    ({"reference_weights": "1"}, [RED, BLUE], r"has 1 values for 2 reference"),
    ({"vl_hidden_layer": -30}, [RED], r"vl_hidden_layer=-30 is outside the VL model's 9 hidden states"),
    ({"token_mode": "pixels"}, [RED], r"token_mode='pixels' is unknown"),
    ({"blend_mode": "overlay"}, [RED], r"blend_mode='overlay' is unknown"),
    ({"vl_composition": "dual", "vl_use_prompt": False}, [RED], r"vl_composition='dual' needs text"),
])
def test_bad_vl_input_is_explained_and_the_next_request_works(manager, overrides, refs, message):
    with pytest.raises(ValueError, match=message):
        vl_generate(manager, vl_request(**overrides), refs)
    assert vl_generate(manager, vl_request(), [RED]).image.size == (64, 64)


def test_odd_reference_files(manager, tmp_path):
    with pytest.raises(ValueError, match=r"references\[0\]: .*broken.jpg is not a readable image"):
        vl_generate(manager, vl_request(), [_corrupt(tmp_path)])
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (96, 96), (255, 0, 0, 128)).save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((96, 96), 40000, dtype=np.uint16)).save(deep)
    for path in (rgba, deep):
        assert vl_generate(manager, vl_request(), [str(path)]).metadata["mode"] == "vl"


def test_text_only_warns_that_the_image_is_ignored(manager):
    result = vl_generate(manager, vl_request(token_mode="text_only"), [RED])
    assert any("text_only" in w for w in result.metadata["warnings"])


def test_vl_hidden_size_must_match_the_dit(tmp_path, zimage_dir):
    from llm_dit.runtime.settings import Settings
    from llm_dit.runtime.tiny import _build_qwen3_vl

    folder = tmp_path / "narrow-vl"
    folder.mkdir()
    _build_qwen3_vl(folder, 0, hidden=32)
    other = ModelManager(Settings(model_path=str(zimage_dir), vl_model_path=str(folder)))
    with pytest.raises(ValueError, match=r"VL model's hidden size \(32\) differs from the DiT's caption width \(64\)"):
        vl_generate(other, vl_request(), [RED])


def test_txt2img_is_unaffected_by_vl_state(manager):
    before = pixels(txt2img(manager, GenerationRequest(**SMALL)))
    vl_generate(manager, vl_request(), [RED])
    assert np.array_equal(before, pixels(txt2img(manager, GenerationRequest(**SMALL))))


def test_vl_timeline_has_every_stage(settings):
    fresh = ModelManager(settings)
    result = vl_generate(fresh, vl_request(), [RED])
    names = [s["name"] for s in result.metadata["timeline"]]
    assert names == ["vl_extract", "offload", "load", "encode", "vae_encode", "denoise", "decode"]
    assert fresh.last_timeline == result.metadata["timeline"]
    assert all(s["seconds"] >= 0 and s["rss_bytes"] > 0 for s in result.metadata["timeline"])

"""Checkpoint formats: a single-file DiT (original key layout) and a GGUF DiT load through diffusers
and generate what the diffusers folder generates; the variant (Turbo / Base) is read and overridable."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from llm_dit.pipelines.generate import txt2img
from llm_dit.runtime import checkpoints
from llm_dit.runtime.models import ModelLoadError, ModelManager
from llm_dit.runtime.settings import Settings
from llm_dit.runtime.tiny import write_gguf, write_single_file

from .conftest import small


@pytest.fixture(scope="module")
def files(zimage_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dit-files")
    return {"single": write_single_file(zimage_dir / "transformer", folder / "z_image_tiny.safetensors"),
            "bf16": write_single_file(zimage_dir / "transformer", folder / "z_image_tiny_bf16.safetensors",
                                      torch.bfloat16),
            "fp8": write_single_file(zimage_dir / "transformer", folder / "z_image_tiny_fp8_e4m3fn.safetensors",
                                     torch.float8_e4m3fn),
            "q8": write_gguf(zimage_dir / "transformer", folder / "z_image_tiny-Q8_0.gguf")}


def _manager(settings, zimage_dir, path):
    # The folder itself (not --tiny) as --model-path, with its transformer replaced by the file.
    return ModelManager(replace(settings, tiny=False, model_path=str(zimage_dir), transformer_file=str(path)))


def _pixels(result):
    return np.asarray(result.image, dtype=np.int16)


def test_single_file_in_the_original_layout_loads_the_folders_weights_bit_for_bit(manager, settings, zimage_dir,
                                                                                    files):
    keys = set(checkpoints._safetensors_header(files["single"]))
    assert "model.diffusion_model.layers.0.attention.qkv.weight" in keys  # the fused layout, not diffusers'
    assert not any("to_q" in k for k in keys)
    single = _manager(settings, zimage_dir, files["single"])
    ours, theirs = single.pipeline().transformer.state_dict(), manager.pipeline().transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # The same weights, but not at the same addresses: diffusers' conversion splits the fused qkv into
    # views of one tensor, the folder's weights are views into its mmapped shards. The CPU matmul
    # kernels split their sums by the data's alignment, so the DiT's output may move in the last
    # float bit (seen: 5e-7, one pixel one level apart, on some machines and not others).
    image, folder = _pixels(txt2img(single, small())), _pixels(txt2img(manager, small()))
    assert np.abs(image - folder).max() <= 1 and (image != folder).mean() < 0.01


def test_gguf_q8_0_stays_quantized_and_is_close(manager, settings, zimage_dir, files):
    gguf = _manager(settings, zimage_dir, files["q8"])
    dit = gguf.pipeline().transformer
    assert type(dit.layers[0].attention.to_q.weight).__name__ == "GGUFParameter"  # not dequantized at load
    ref = manager.pipeline().transformer
    latents, t, caption = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5]), \
        [torch.randn(7, 64, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        a, b = ref([latents], t, caption)[0][0], dit([latents], t, caption)[0][0]
    # Q8_0 keeps 8 bits per weight with one scale per 32: the DiT's output moves by ~1% of its range.
    assert 0 < (a - b).abs().max() < 0.02 * a.abs().max()
    image, reference = _pixels(txt2img(gguf, small())), _pixels(txt2img(manager, small()))
    assert np.abs(image - reference).mean() < 4  # mean absolute difference, in 0-255 levels


def test_an_fp8_file_is_upcast_at_load_and_close(manager, settings, zimage_dir, files):
    assert checkpoints.quantization(str(files["fp8"])) == "F8_E4M3"
    dit = _manager(settings, zimage_dir, files["fp8"]).pipeline().transformer
    ours, theirs = dit.state_dict(), manager.pipeline().transformer.state_dict()
    assert {v.dtype for v in ours.values()} == {torch.float32}  # --dtype (float32 on the CPU)
    weight = "layers.0.feed_forward.w1.weight"
    # e4m3 keeps 3 mantissa bits: each weight within 1/16 of itself (plus the subnormal floor)
    assert (ours[weight] - theirs[weight]).abs().max() <= theirs[weight].abs().max() / 16 + 2**-9


def test_metadata_names_the_file_its_hash_and_quantization(settings, zimage_dir, files):
    import hashlib

    result = txt2img(_manager(settings, zimage_dir, files["q8"]), small())
    info = result.metadata["checkpoint"]
    assert info["transformer_file"] == "z_image_tiny-Q8_0.gguf" and info["transformer_quantization"] == "Q8_0"
    assert info["transformer_hash"] == "sha256:" + hashlib.sha256(files["q8"].read_bytes()).hexdigest()
    assert checkpoints.quantization(str(files["bf16"])) == "BF16"


def test_the_planner_reads_the_stored_size_from_the_header(manager, files):
    from llm_dit.core.devices import module_bytes

    float32 = module_bytes(manager.pipeline().transformer)
    assert checkpoints.weights_bytes(str(files["single"])) == float32
    assert checkpoints.weights_bytes(str(files["bf16"])) == float32 // 2
    # Q8_0: 34 bytes per 32 weights (vs 128 in float32) for the linear weights; norms stay float32
    assert 0.25 * float32 < checkpoints.weights_bytes(str(files["q8"])) < 0.45 * float32


def test_big_files_are_named_by_size_and_head(tmp_path, monkeypatch):
    path = tmp_path / "big.gguf"
    path.write_bytes(b"a" * 4096)
    monkeypatch.setattr(checkpoints, "FULL_HASH_BYTES", 1024)
    monkeypatch.setattr(checkpoints, "HEADER_HASH_BYTES", 100)
    same_head = tmp_path / "same_head.gguf"
    same_head.write_bytes(b"a" * 100 + b"b" * 3996)
    assert checkpoints.fingerprint(str(path)).startswith("size:4096+head-sha256:")
    assert checkpoints.fingerprint(str(path)) == checkpoints.fingerprint(str(same_head))  # only the head is read


def test_wrong_files_are_refused_with_the_fix(settings, zimage_dir, tmp_path):
    with pytest.raises(ValueError, match=r"transformer_file='x.ckpt' is neither a .safetensors nor a .gguf"):
        Settings(transformer_file="x.ckpt")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x_embedder.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(ModelLoadError, match=r"Could not load the transformer file .*other.safetensors.*"
                                             r"matching the architecture of --model-path"):
        _manager(settings, zimage_dir, other).pipeline()


@pytest.mark.parametrize("source, setting, variant", [
    ("Tongyi-MAI/Z-Image-Turbo", "auto", "turbo"),
    ("Tongyi-MAI/Z-Image", "auto", "base"),
    ("/hub/models--Tongyi-MAI--Z-Image/snapshots/abc123", "auto", "base"),
    ("/hub/models--Tongyi-MAI--Z-Image-Turbo/snapshots/abc123", "auto", "turbo"),
    ("/models/my-finetune", "auto", "turbo"),
    ("/models/my-finetune", "base", "base"),
    ("Tongyi-MAI/Z-Image", "turbo", "turbo"),
])
def test_variant_is_read_from_the_name_and_the_setting_wins(source, setting, variant):
    assert checkpoints.detect_variant(source, setting) == variant


@pytest.fixture(scope="module")
def base_dir(zimage_dir, tmp_path_factory):
    """The tiny checkpoint in a folder named like the Base repo, its scheduler at shift 6."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("hub") / "Z-Image"
    shutil.copytree(zimage_dir, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "shift": 6.0}))
    return folder


def test_a_base_checkpoint_switches_the_defaults_and_the_override_wins(settings, base_dir):
    from llm_dit.core.variants import BASE_NEGATIVE

    base = ModelManager(replace(settings, tiny=False, model_path=str(base_dir)))
    assert base.variant == "base"
    assert base.request_defaults() == {"num_inference_steps": 28, "guidance_scale": 4.0,
                                       "negative_prompt": BASE_NEGATIVE, "shift": 6.0}
    forced = ModelManager(replace(settings, tiny=False, model_path=str(base_dir), model_variant="turbo"))
    assert forced.variant == "turbo" and forced.request_defaults() == {"shift": 6.0}
    assert ModelManager(settings).request_defaults() == {"shift": 3.0}  # Turbo: the declared defaults


def test_base_without_guidance_is_warned_and_metadata_names_the_variant(settings, base_dir):
    base = ModelManager(replace(settings, tiny=False, model_path=str(base_dir)))
    plain = txt2img(base, small())
    assert plain.metadata["checkpoint"] == {"variant": "base"}
    assert any("guidance_scale=0 on Z-Image Base" in w for w in plain.metadata["warnings"])
    guided = txt2img(base, small(num_inference_steps=28, guidance_scale=4.0, negative_prompt="blurry"))
    assert not guided.metadata["warnings"]


def test_the_cli_and_the_ui_start_from_the_base_defaults(settings, base_dir, tmp_path):
    from llm_dit.cli import main
    from llm_dit.core.variants import BASE_NEGATIVE
    from llm_dit.core.pnginfo import read_parameters
    from ui import build_demo

    args = ["generate", "--prompt", "a fox", "--height", "64", "--width", "64", "--seed", "1",
            "--num-inference-steps", "2", "--model-path", str(base_dir), "--cache-dir", settings.cache_dir, "--output-dir", str(tmp_path)]
    assert main(args) == 0
    png = sorted(tmp_path.glob("*.png"))[-1]
    values = read_parameters(png).values
    assert (values["guidance_scale"], values["shift"], values["negative_prompt"]) == (4.0, 6.0, BASE_NEGATIVE)
    demo = build_demo(replace(settings, tiny=False, model_path=str(base_dir)))
    props = [c["props"] for c in demo.config["components"]]
    for label, value in (("Steps", 28), ("Guidance scale", 4.0), ("Shift", 6.0)):
        shown = {p["value"] for p in props if p.get("label") == label}
        assert shown == {value}, (label, shown)
    readouts = {p.get("elem_id"): p["value"] for p in props if p.get("elem_id", "").endswith("readout")}
    assert readouts["img2img-readout"].startswith("25 of 28 forwards")  # Turbo's advice read "7 of 8"
    assert readouts["vl-strength-readout"].startswith("25 of 28 forwards")
    assert readouts["txt2img-readout"].startswith("28 forwards")

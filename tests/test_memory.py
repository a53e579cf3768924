"""Memory levers and the placement plan.

The plan is checked at the real models' sizes, read from metadata-only checkpoints (configs and
safetensors indexes of the released architectures, no weights); each lever is checked on the
loaded tiny models on the CPU: the hooks, flags and quantized weight classes really are there,
and the models still generate.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from llm_dit.runtime import memory
from llm_dit.pipelines.generate import txt2img
from llm_dit.runtime.models import ModelLoadError, ModelManager, module_bytes, resolve_device
from llm_dit.runtime.settings import Settings, load_settings

from .conftest import small

# ---- the plan at the real sizes --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_parts(tmp_path_factory):
    from llm_dit.runtime.tiny import write_metadata_only

    zimage, vl = write_metadata_only(tmp_path_factory.mktemp("real-metadata"))
    return memory.read_components(zimage, vl)


def test_real_sizes_come_from_the_checkpoint_metadata(real_parts):
    params = {n: p.params for n, p in real_parts.items()}
    # Z-Image-Turbo's DiT 6.15B, Qwen3-4B 4.02B, the VAE 84M, Qwen3-VL-4B 4.44B parameters.
    assert params == {"transformer": 6_154_908_736, "text_encoder": 4_022_468_096, "vae": 83_819_683,
                      "vl": 4_437_815_808}
    assert real_parts["transformer"].source == "diffusion_pytorch_model.safetensors.index.json total_parameters"
    assert real_parts["vae"].source == "config.json on the meta device"


# budget GiB -> (plan, offload, text encoder on the GPU, quantized parts, VL placement)
EXPECTED = {
    80: ("all on the GPU", "none", True, {}, "gpu"),
    24: ("all on the GPU", "none", True, {}, "gpu-park"),
    16: ("text encoder on the CPU", "none", False, {}, "gpu-park"),
    12: ("int8 DiT, text encoder on the CPU", "none", False, {"transformer": "int8"}, "gpu-park"),
    8: ("int8 DiT and text encoder, model offload", "model", True,
        {"transformer": "int8", "text_encoder": "int8", "vl": "int8"}, "gpu"),
}


@pytest.mark.parametrize("budget", sorted(EXPECTED, reverse=True))
def test_plan_for_real_sizes(real_parts, budget):
    plan = memory.plan(real_parts, budget)
    p = plan.placement
    quantized = {k: v for k, v in p.quantize.items() if v != "none"}
    assert (plan.name, p.offload, p.text_encoder_on_gpu, quantized, p.vl) == EXPECTED[budget]
    assert plan.fits and all(v <= budget for v in plan.peaks_gib.values())
    # The fastest that fits: every rung above the chosen one needs more than the budget.
    names = [name for name, _ in memory.LADDER]
    for name, candidate in memory.LADDER[:names.index(plan.name)]:
        need = memory.peaks(real_parts, replace(candidate, vl="cpu"), 1024 * 1024, 2, 1024 * 1024)["generate"]
        assert need > budget, name


def test_plan_below_every_rung_says_it_does_not_fit(real_parts):
    plan = memory.plan(real_parts, 2)
    assert not plan.fits and plan.placement.offload == "sequential" and plan.placement.vl == "cpu"
    assert "does NOT fit" in "\n".join(plan.lines())


def test_explicit_settings_override_the_plan(real_parts):
    plan = memory.plan(real_parts, 80, overrides={"offload": "group", "quantize_vl": "int8", "vae_tiling": None})
    assert (plan.placement.offload, plan.placement.quantize["vl"]) == ("group", "int8")
    assert "offload=group set explicitly" in plan.reasons
    assert plan.peaks_gib["generate"] < memory.plan(real_parts, 80).peaks_gib["generate"]


def test_large_images_tile_the_vae_and_vl_stays_put_without_auto_unload(real_parts):
    plan = memory.plan(real_parts, 24, height=2048, width=2048)
    assert plan.placement.vae_tiling and any("VAE tiling" in r for r in plan.reasons)
    assert memory.plan(real_parts, 24, can_park=False).placement.vl != "gpu-park"


def test_mps_plans_never_quantize(real_parts):
    plan = memory.plan(real_parts, 8, device="mps", quantizable=False)
    assert set(plan.placement.quantize.values()) == {"none"}


def test_tiny_sizes_match_the_loaded_modules(manager):
    from llm_dit.runtime.tiny import ensure_tiny_qwen3_vl

    vl_folder = ensure_tiny_qwen3_vl(cache_dir=manager.settings.tiny_cache_dir)
    parts = memory.read_components(manager.zimage_source, vl_folder)
    pipe = manager.pipeline()
    assert parts["transformer"].params == sum(p.numel() for p in pipe.transformer.parameters())
    assert parts["vae"].params == sum(p.numel() for p in pipe.vae.parameters())
    assert parts["transformer"].source.endswith("shard headers")


# ---- settings ---------------------------------------------------------------------------------


def test_memory_settings_flags_and_env():
    s = load_settings(["--offload", "group", "--quantize-transformer", "int8", "--compile",
                       "--text-encoder-device", "cuda:1"], environ={"LLM_DIT_MEMORY_BUDGET": "16"})
    assert (s.offload, s.quantize_transformer, s.compile, s.text_encoder_device, s.memory_budget) == (
        "group", "int8", True, "cuda:1", "16")
    zero = load_settings([], environ={"SPACES_ZERO_GPU": "1", "LLM_DIT_COMPILE": "1", "LLM_DIT_OFFLOAD": "model"})
    assert (zero.compile, zero.offload) == (False, "none")


@pytest.mark.parametrize("values,message", [
    ({"memory_budget": "lots"}, "memory_budget='lots' is not a size"),
    ({"memory_budget": "0"}, "memory_budget='0' is not a size"),
    ({"offload": "disk"}, "offload='disk' is not supported"),
    ({"quantize_vl": "int4"}, "quantize_vl='int4' is not supported"),
    ({"vl_device": "cuda:x"}, "vl_device='cuda:x' is not a device"),
])
def test_bad_memory_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        Settings(**values)


def test_cuda_index_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="'cuda:1' was asked for"):
        resolve_device("cuda:1")


# ---- levers on the loaded tiny models (CPU) ----------------------------------------------------


@pytest.fixture(scope="module")
def reference_image(manager):
    return np.asarray(txt2img(manager, small()).image, dtype=np.int16)


@pytest.mark.parametrize("mode", ["model", "group", "sequential"])
def test_offload_modes_hook_the_models_and_generate_the_same_image(settings, reference_image, mode):
    manager = ModelManager(replace(settings, offload=mode))
    result = txt2img(manager, small())
    pipe, lm = manager.pipeline(), manager.language_model()
    if mode == "model":  # accelerate's whole-model hooks, chained text encoder -> DiT
        assert type(lm.model._hf_hook).__name__ == "CpuOffload"
        assert type(pipe.transformer._hf_hook).__name__ == "CpuOffload"
    elif mode == "group":  # diffusers' group offloading: block level on the DiT, leaf level on the encoder
        assert pipe.transformer._diffusers_hook.get_hook("group_offloading") is not None
        assert lm.model.layers[0].mlp.up_proj._diffusers_hook.get_hook("group_offloading") is not None
    else:  # accelerate's per-layer hooks, weights parked off the module
        assert type(pipe.transformer.layers[0].attention.to_q._hf_hook).__name__ == "AlignDevicesHook"
        assert pipe.transformer.layers[0].attention.to_q.weight.device.type == "meta"
    assert result.metadata["memory"]["offload"] == mode
    assert np.abs(np.asarray(result.image, dtype=np.int16) - reference_image).max() == 0


@pytest.mark.parametrize("kind,tensor_class,most", [("int8", "Int8Tensor", 8), ("fp8", "Float8Tensor", 40)])
def test_weight_only_quantization_quantizes_and_shrinks_the_models(settings, manager, reference_image, kind,
                                                                   tensor_class, most):
    import torchao.quantization

    cls = getattr(torchao.quantization, tensor_class)
    quantized = ModelManager(replace(settings, quantize_transformer=kind, quantize_text_encoder=kind))
    result = txt2img(quantized, small())
    pipe, lm = quantized.pipeline(), quantized.language_model()
    assert isinstance(pipe.transformer.layers[0].attention.to_q.weight, cls)
    assert isinstance(lm.model.layers[0].mlp.up_proj.weight, cls)
    assert not isinstance(pipe.vae.decoder.conv_in.weight, cls)  # the VAE is never quantized
    full, small_bytes = module_bytes(manager.pipeline().transformer), module_bytes(pipe.transformer)
    assert small_bytes < 0.35 * full  # float32 -> 8-bit weights (+ scales and the unquantized norms)
    assert result.metadata["memory"]["quantize"] == {"transformer": kind, "text_encoder": kind}
    diff = np.abs(np.asarray(result.image, dtype=np.int16) - reference_image)
    assert 0 < diff.max() <= most  # 8-bit weights change the picture, a little


def test_nf4_without_a_gpu_names_what_it_needs(settings):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="quantize_transformer=nf4: .*needs a CUDA GPU, not cpu: use int8"):
        ModelManager(replace(settings, quantize_transformer="nf4")).pipeline()


def test_vae_tiling_switch_and_auto_threshold(settings, manager):
    on = ModelManager(replace(settings, vae_tiling="on"))
    txt2img(on, small())
    assert on.pipeline().vae.use_tiling and on.pipeline().vae.use_slicing
    txt2img(manager, small())  # auto, 64x64: whole-image decode
    assert not manager.pipeline().vae.use_tiling
    with manager.generation_lock:
        assert manager.apply_vae_tiling(2048, 2048) and manager.pipeline().vae.use_tiling
        assert not manager.apply_vae_tiling(1024, 1024) and not manager.pipeline().vae.use_tiling
    off = ModelManager(replace(settings, vae_tiling="off"))
    with off.generation_lock:
        assert not off.apply_vae_tiling(4096, 4096)


def test_compile_is_regional(settings):
    manager = ModelManager(replace(settings, compile=True))
    transformer = manager.pipeline().transformer
    blocks = [m for m in transformer.modules() if type(m).__name__ == "ZImageTransformerBlock"]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
    assert transformer._compiled_call_impl is None  # the model itself is not compiled, only its blocks


def test_status_shows_the_plan(manager):
    status = manager.status()
    assert status["plan"][0].startswith("memory plan: everything on the CPU")
    assert status["levers"]["offload"] == "none"


def test_tiled_decode_agrees_and_peaks_lower(zimage_dir):
    """2048² on the tiny VAE, each decode in a fresh process: the tiled one adds far less memory.
    Tolerance: mean |difference| below 0.02 of the [-1, 1] range (2.5/255) and 99% of the pixels
    within 0.1; the seams of a random-weight VAE differ more (the max is reported, not bounded)."""
    from llm_dit.bench_memory import vae_tiling

    row = vae_tiling(zimage_dir, 2048)
    assert row["tiled_peak_mb"] < 0.6 * row["whole_peak_mb"]
    assert row["mean_abs_diff"] < 0.02 and row["p99_abs_diff"] < 0.1


def test_status_tab_renders_the_plan(manager):
    from ui.tabs.status import render_plan

    text = render_plan(manager.memory_plan().lines(), manager.memory_levers())
    assert text.startswith("**Memory plan: everything on the CPU")
    assert "offload: none" in text and "no accelerator: every model runs on the CPU" in text


def test_vl_model_quantizes_too(settings):
    from torchao.quantization import Int8Tensor

    manager = ModelManager(replace(settings, quantize_vl="int8", vl_auto_unload=False))
    with manager.vl_model() as (model, _):
        assert isinstance(model.model.language_model.layers[0].mlp.up_proj.weight, Int8Tensor)
    assert manager.memory_levers()["quantize"] == {"vl": "int8"}


def test_parking_holds_generations_until_the_vl_model_is_gone(settings):
    """Plan "gpu-park" (a GPU plan, given here as data): while the VL model runs, the DiT and text
    encoder wait on the CPU and generations wait for the lock; afterwards both come back."""
    manager = ModelManager(settings)
    manager.language_model()  # the DiT and the text encoder loaded (the encoder loads on first use)
    plan = manager.memory_plan()
    manager._plan = replace(plan, placement=replace(plan.placement, vl="gpu-park"))
    with manager.vl_model():
        assert manager.generation_lock.locked()
        assert [module for module, _ in manager._parked] == [manager.language_model(), manager.pipeline().transformer]
    assert not manager.generation_lock.locked() and not manager._parked and not manager.vl_loaded
    assert txt2img(manager, small()).image.size == (64, 64)


def test_memory_bench_cases_run(tiny_cache, tmp_path):
    """The memory cases of the benchmark (the GPU proof script) run end to end on tiny models."""
    from llm_dit import bench

    results = bench.main(["--size", "tiny", "--image", "64", "--repeats", "1", "--cases", "M1,M2",
                          "--plans", "planned,int8 DiT + TE", "--cache-dir", str(tiny_cache),
                          "--json", str(tmp_path / "bench.json")])
    assert list(results["M1"]) == ["64k", "256k", "512k", "1024k"]
    tokens = [row["image_tokens"] for row in results["M1"].values()]
    assert tokens == sorted(tokens) and tokens[0] < tokens[-1]  # a bigger budget, more image tokens
    plain, int8 = results["M2"]["planned"], results["M2"]["int8 DiT + TE"]
    assert plain["plan"] == "everything on the CPU" and int8["plan"] == "everything on the CPU"
    assert plain["fits"] and int8["fits"] and int8["dit_mb"] < 0.35 * plain["dit_mb"]
    assert "| M1 VL extraction at 1024k px |" in bench.table(results)


def test_the_readme_plan_table_is_the_planners(real_parts):
    """README's plan table, regenerated by `python -m llm_dit.runtime.trace --tables`, is what the
    planner (with the stored trace's activation terms) decides for the released sizes."""
    from pathlib import Path

    from llm_dit.runtime.trace import plan_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert plan_table(real_parts) in readme

"""The memory plan counts the checkpoint formats as they are held: a GGUF DiT at its quantized
bytes (read from the file's header), an fp8 single file at the run dtype (upcast at load), and a
ControlNet beside the DiT when one is set. Tiny files built here for what the planner reads; the
released sizes (metadata only) for the plans, and the README's table is the planner's."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llm_dit.runtime import checkpoints, memory
from llm_dit.runtime.tiny import ensure_tiny_controlnet, ensure_tiny_qwen3_vl, write_gguf, write_single_file

GiB = 2**30


@pytest.fixture(scope="module")
def files(zimage_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan-files")
    return {"fp8": write_single_file(zimage_dir / "transformer", folder / "tiny_fp8_e4m3fn.safetensors",
                                     torch.float8_e4m3fn),
            "q8": write_gguf(zimage_dir / "transformer", folder / "tiny-Q8_0.gguf")}


@pytest.fixture(scope="module")
def real_parts(tmp_path_factory):
    from llm_dit.runtime.tiny import write_metadata_only

    return memory.read_components(*write_metadata_only(tmp_path_factory.mktemp("real-metadata")))


def _plan(settings, zimage_dir, **changes):
    vl = ensure_tiny_qwen3_vl(cache_dir=settings.tiny_cache_dir)
    return memory.plan_for(replace(settings, tiny=False, model_path=str(zimage_dir), **changes), str(zimage_dir), str(vl))


def test_the_planner_reads_the_given_files_from_their_headers(settings, zimage_dir, files):
    folder = _plan(settings, zimage_dir)
    gguf = _plan(settings, zimage_dir, transformer_file=str(files["q8"]))
    assert gguf.sizes_gib["transformer"] == checkpoints.weights_bytes(str(files["q8"])) / GiB
    assert gguf.sizes_gib["transformer"] < 0.4 * folder.sizes_gib["transformer"]  # Q8_0 vs float32 on the CPU
    assert gguf.sources["transformer"] == "tiny-Q8_0.gguf tensor sizes (GGUF, held quantized)"
    fp8 = _plan(settings, zimage_dir, transformer_file=str(files["fp8"]))
    assert fp8.sizes_gib["transformer"] == folder.sizes_gib["transformer"]  # upcast at load: the folder's size
    assert fp8.sources["transformer"] == "tiny_fp8_e4m3fn.safetensors header"


def test_the_controlnet_joins_the_plan_when_set(settings, zimage_dir):
    from diffusers import ZImageControlNetModel

    path = ensure_tiny_controlnet(cache_dir=settings.tiny_cache_dir)
    plan = _plan(settings, zimage_dir, controlnet_path=str(path))
    params = sum(p.numel() for p in ZImageControlNetModel.from_pretrained(path).parameters())
    assert plan.sizes_gib["controlnet"] == params * 4 / GiB  # float32 on the CPU
    assert "controlnet" not in _plan(settings, zimage_dir).sizes_gib
    assert "controlnet" not in _plan(settings, zimage_dir, controlnet_path="someone/not-downloaded").sizes_gib


def test_a_controlnet_adds_its_weights_to_every_placement_and_its_residuals_to_the_dit_step(real_parts):
    controlnet = memory.Component("controlnet", 6_712_488_675 // 2, "known size")
    with_it = {**real_parts, "controlnet": controlnet}
    weights, hints = memory.weights_gib(controlnet, 2), memory.activation_gib(controlnet, 1024 * 1024, 2)
    assert 0.5 < hints < 1.0  # 19 residuals of 4608 tokens x 3840 in bf16
    added = []
    for _, placement in memory.LADDER:
        before = memory.peaks(real_parts, placement, 1024 * 1024, 2, 0)["generate"]
        added.append(memory.peaks(with_it, placement, 1024 * 1024, 2, 0)["generate"] - before)
    assert all(weights - 1e-9 <= a <= weights + hints + 1e-9 for a in added)
    assert any(a > weights + hints / 2 for a in added)  # where the DiT's step is the peak, the residuals count


def test_a_gguf_dit_is_never_quantized_again_and_fits_smaller_cards(real_parts):
    q4 = {**real_parts, "transformer": replace(real_parts["transformer"], held_bytes=4_660_000_000)}
    for budget in (24, 16, 12, 8):
        plan = memory.plan(q4, budget)
        assert plan.placement.quantize["transformer"] == "none" and plan.fits
    assert memory.plan(q4, 8).name == "text encoder on the CPU"  # bf16 needs int8 and model offload there
    assert memory.plan(real_parts, 8).name == "int8 DiT and text encoder, model offload"


def test_the_readme_checkpoint_table_is_the_planners(real_parts):
    from llm_dit.runtime.trace import checkpoint_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert checkpoint_table(real_parts) in readme

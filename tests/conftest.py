"""Shared fixtures: tiny real checkpoints (built once per test session) and one model manager."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
# gradio's upload cache of this test run alone (its default, /tmp/gradio, is shared by every gradio
# process on the machine: a test that measures what a request adds to it saw others' files)
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio-tests-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], True)

from llm_dit.runtime.models import ModelManager  # noqa: E402
from llm_dit.core.request import GenerationRequest  # noqa: E402
from llm_dit.runtime.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def settings(tiny_cache, tmp_path_factory):
    return Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="session")
def manager(settings):
    return ModelManager(settings)


@pytest.fixture(scope="session")
def zimage_dir(manager):
    from pathlib import Path

    return Path(manager.zimage_source)


def small(**overrides) -> GenerationRequest:
    """A request small enough for the tiny models on a CPU (64x64, fixed seed)."""
    values = {"prompt": "a red fox in the snow", "height": 64, "width": 64, "seed": 7}
    values.update(overrides)
    return GenerationRequest(**values)


@pytest.fixture(scope="session")
def lora_file(zimage_dir, tmp_path_factory):
    """A real LoRA for the tiny DiT, made with peft and saved by diffusers' own saver."""
    import torch
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    dit = ZImageTransformer2DModel.from_pretrained(zimage_dir / "transformer")
    torch.manual_seed(3)
    dit.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                               init_lora_weights=False))
    folder = tmp_path_factory.mktemp("lora")
    ZImagePipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(dit))
    return str(folder / "pytorch_lora_weights.safetensors")

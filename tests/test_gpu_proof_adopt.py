"""`ModelManager.adopt`: a manager over models built elsewhere (the GPU proof builds random weights
on the GPU) runs exactly what a manager that loads them runs; only the source's name differs."""

import numpy as np
import pytest
from diffusers import ZImagePipeline
from transformers import Qwen3ForCausalLM, Qwen3VLForConditionalGeneration

from .conftest import small
from llm_dit.conditioning.vl import ImageOnlyProcessor
from llm_dit.pipelines.generate import txt2img
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.settings import Settings


@pytest.fixture(scope="module")
def built(manager):
    zimage, vl = manager.zimage_source, manager.vl_source
    pipe = ZImagePipeline.from_pretrained(zimage, text_encoder=None)
    lm = Qwen3ForCausalLM.from_pretrained(zimage, subfolder="text_encoder")
    return {"pipeline": pipe, "language_model": lm,
            "vl": (Qwen3VLForConditionalGeneration.from_pretrained(vl), ImageOnlyProcessor.from_pretrained(vl))}


def _settings(manager, **values):
    return Settings(model_path=manager.zimage_source, vl_model_path=manager.vl_source,
                    output_dir=manager.settings.output_dir, **values)


def test_an_adopted_manager_makes_the_loading_managers_image(manager, built):
    adopted = ModelManager.adopt(_settings(manager), **built, label="built in the test")
    ours = txt2img(adopted, small())
    assert np.array_equal(np.asarray(ours.image), np.asarray(txt2img(manager, small()).image))
    assert ours.metadata["model"] == "built in the test"
    assert adopted.pipeline() is built["pipeline"] and adopted.language_model() is built["language_model"]
    with adopted.vl_model() as (model, processor):
        assert (model, processor) == built["vl"] and adopted.vl_model_id == "built in the test"
    assert dict(adopted.load_counts) == {"zimage": 1, "text_encoder": 1, "vl": 1}


def test_a_plan_that_quantizes_cannot_adopt(manager, built):
    with pytest.raises(ValueError, match=r"the plan quantizes \{'transformer': 'int8'\}.*quantize_transformer"):
        ModelManager.adopt(_settings(manager, quantize_transformer="int8"), **built)

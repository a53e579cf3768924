"""Step-scheduled VL (issue 14 #7): the blend conditions exactly the chosen steps, text the others."""

import numpy as np
import pytest
import torch
from PIL import Image

from llm_dit.studies.compare import SweepSpec, run_sweep
from llm_dit.pipelines.recipe import condition, vl_generate
from llm_dit.pipelines.generate import run
from llm_dit.core.pnginfo import request_from_png
from llm_dit.core.request import VLRequest, scheduled_steps

RED = Image.new("RGB", (128, 128), (210, 40, 30))


def vl_request(**overrides) -> VLRequest:
    return VLRequest(**{"prompt": "a fox in the snow", "height": 64, "width": 64, "seed": 5, **overrides})


def caption_inputs(manager, call):
    """Every caption sequence the DiT receives (its caption embedder's input, padded to a multiple
    of 32 tokens by repeating the last one), one per forward."""
    seen = []
    embedder = manager.pipeline().transformer.cap_embedder
    hook = embedder.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    try:
        result = call()
    finally:
        hook.remove()
    return seen, result


def test_the_blend_reaches_exactly_the_chosen_steps(manager):
    request = vl_request(strength=0.9, vl_start=0.25, vl_end=0.75)  # 7 forwards: i/7 in [0.25, 0.75)
    cond = condition(manager, request, [RED])
    blend, text = cond.encoding.prompt_embeds, cond.encoding.encoded.embeds
    assert not torch.equal(blend, text)
    seen, result = caption_inputs(manager, lambda: vl_generate(manager, request, [RED]))
    assert len(seen) == 7
    n = blend.shape[0]
    assert [i for i, x in enumerate(seen) if torch.equal(x[:n], blend)] == [2, 3, 4, 5]
    assert [i for i, x in enumerate(seen) if torch.equal(x[:n], text)] == [0, 1, 6]
    assert result.metadata["scheduled_steps"] == {"window": [0.25, 0.75], "conditioned": [2, 3, 4, 5],
                                                  "outside": [0, 1, 6]}


def test_the_whole_window_is_todays_output(manager):
    request = vl_request(strength=0.9)
    assert (request.vl_start, request.vl_end) == (0.0, 1.0)
    cond = condition(manager, request, [RED])
    seen, result = caption_inputs(manager, lambda: vl_generate(manager, request, [RED]))
    blend = cond.encoding.prompt_embeds
    assert len(seen) == 7 and all(torch.equal(x[:blend.shape[0]], blend) for x in seen)
    plain = run(manager, request, RED, encoding=cond.encoding)  # the blend on every step, no callback swap
    assert np.array_equal(np.asarray(result.image), np.asarray(plain.image))
    assert "scheduled_steps" not in result.metadata
    part = vl_generate(manager, vl_request(strength=0.9, vl_end=0.5), [RED])
    assert not np.array_equal(np.asarray(part.image), np.asarray(result.image))


def test_a_scheduled_image_regenerates_from_its_png(manager, tmp_path):
    result = vl_generate(manager, vl_request(vl_start=0.5, seed=-1), [RED])
    request = request_from_png(result.save(tmp_path))
    assert (request.vl_start, request.vl_end) == (0.5, 1.0)
    assert np.array_equal(np.asarray(vl_generate(manager, request, [RED]).image), np.asarray(result.image))


def test_windows_in_one_batched_sweep_equal_single_runs(manager, tmp_path):
    sweep = run_sweep(manager, SweepSpec("vl_end", "0.5, 1", batch_size=2), vl_request(), [RED], tmp_path / "s1")
    assert [c.result.metadata["batch_size"] for c in sweep.finished()] == [2, 2]  # one call, two windows
    assert sweep.finished()[0].result.metadata["scheduled_steps"]["conditioned"] == [0, 1, 2, 3]
    for cell in sweep.finished():
        single = vl_generate(manager, cell.request, [RED])
        assert np.abs(np.asarray(cell.result.image).astype(int) - np.asarray(single.image).astype(int)).max() <= 1


def test_step_fractions():
    assert scheduled_steps(8) == list(range(8))
    assert scheduled_steps(8, 0.5, 1.0) == [4, 5, 6, 7]
    assert scheduled_steps(7, 0.0, 0.5) == [0, 1, 2, 3]


@pytest.mark.parametrize("overrides,message", [
    ({"vl_start": 0.5, "vl_end": 0.5}, r"vl_start=0.5 is not before vl_end=0.5"),
    ({"vl_start": 0.9, "strength": 0.9}, r"vl_start=0.9, vl_end=1.0 covers none of the 7 steps"),
    ({"vl_end": 1.5}, r"vl_end=1.5 is out of range"),
])
def test_bad_windows_are_explained(manager, overrides, message):
    with pytest.raises(ValueError, match=message):
        condition(manager, vl_request(**overrides), [RED])

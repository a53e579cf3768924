"""txt2img / img2img "Export embeddings": the prompt's text embeddings as `.safetensors`, made by
the same library code as the `encode` endpoint, saved in the output folder, and usable as
diffusers' `prompt_embeds`. The events are private (the page's buttons; `encode` is the public
API), so they are called here as the page calls them: through gradio's queue."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from safetensors import safe_open
from safetensors.torch import load_file

from llm_dit.core.prompt import format_chat
from llm_dit.core.request import field_meta
from llm_dit.runtime.settings import Settings
from ui import build_demo, launch_options
from ui.tabs.img2img import FIELDS as IMG2IMG
from ui.tabs.txt2img import FIELDS as TXT2IMG


@pytest.fixture(scope="module")
def served(settings, manager):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    yield url, Client(url, verbose=False)
    demo.close()


def run_event(url, api_name, fields, session, **values):
    """One event through gradio's queue, as the page runs it: (its completed message, the log
    messages on the way), or the refusal of its validator (an httpx.Response)."""
    config = httpx.get(url + "config", timeout=30).json()
    index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    data = [values.get(f, field_meta(f)["default"]) for f in fields]
    join = httpx.post(url + "gradio_api/queue/join", timeout=30,
                      json={"data": data, "fn_index": index, "session_hash": session})
    if join.status_code != 200:
        return join, []
    logs = []
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session},
                      timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                logs += [message] if message.get("msg") == "log" else []
                if message.get("msg") == "process_completed":
                    return message, logs
    raise AssertionError(f"{api_name} never completed")


def exported(message) -> Path:
    """The saved export in the output folder (the page shows gradio's cached copy of it)."""
    assert message["success"], message
    return Path(message["output"]["data"][0]["path"])


def _image(pipe, seed=7, **conditioning):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(**conditioning, height=64, width=64, num_inference_steps=4, guidance_scale=0.0,
                generator=generator, output_type="np").images[0]


def test_the_txt2img_export_is_diffusers_prompt_embeds(served, settings, manager):
    message, _ = run_event(served[0], "txt2img_export", TXT2IMG, "export-1", prompt="a red fox in the snow")
    shown = exported(message)
    saved = Path(settings.output_dir) / shown.name
    assert saved.exists() and saved.name.endswith("-txt2img-prompt-embeds.safetensors")
    tensors = load_file(str(saved))
    assert list(tensors) == ["embeds"]
    with safe_open(str(saved), "pt") as f:
        metadata = {k: json.loads(v) for k, v in f.metadata().items()}
    assert metadata["chat"] == format_chat("a red fox in the snow")
    assert metadata["request"]["prompt"] == "a red fox in the snow"
    assert metadata["token_count"] == tensors["embeds"].shape[0]

    manager.language_model()  # the pipeline's own text encoder, for the prompt= run
    pipe = manager.pipeline()
    with manager.generation_lock:
        from_file = _image(pipe, prompt_embeds=[tensors["embeds"]])
        from_prompt = _image(pipe, prompt="a red fox in the snow")
        other = _image(pipe, prompt="a blue boat on a lake")
    np.testing.assert_allclose(from_file, from_prompt, atol=1e-5)
    assert np.abs(from_file - other).max() > 1e-2  # the embeddings are what makes the picture


def test_the_export_equals_what_encode_returns(served):
    """Same prompt parts (a style template and a system prompt) through the tab and the API."""
    parts = {"prompt": "a harbour at dawn", "template": "Bauhaus composition", "system_prompt": "Paint it.",
             "hidden_layer": -3}
    message, _ = run_event(served[0], "img2img_export", IMG2IMG, "export-2", **parts)
    path = exported(message)
    assert path.name.endswith("-img2img-prompt-embeds.safetensors")
    ours = load_file(str(path))["embeds"]
    theirs = load_file(served[1].predict(**parts, api_name="/encode"))["embeds"]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with safe_open(str(path), "pt") as f:
        chat = json.loads(f.metadata()["chat"])
    assert chat.startswith("<|im_start|>system\nPaint it.") and "a harbour at dawn" in chat


def test_a_bad_field_is_refused_before_the_queue_with_its_name(served):
    reply, _ = run_event(served[0], "txt2img_export", TXT2IMG, "export-3", prompt="a fox", hidden_layer=-99)
    assert reply.status_code == 422
    refused = [d for d in reply.json()["detail"] if not d["is_valid"]]
    assert refused[0]["parameter_name"] == "hidden_layer" and "hidden_layer=-99" in refused[0]["message"]


def test_a_refusing_disk_warns_and_the_app_keeps_serving(manager, tiny_cache, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the output folder should be")
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(blocked))
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        message, logs = run_event(url, "txt2img_export", TXT2IMG, "export-4", prompt="a fox")
        assert message["success"] and message["output"]["data"] == [None]
        warning = next(m for m in logs if m.get("level") == "warning")["log"]
        assert "output_dir: could not save" in warning and "point --output-dir at another folder" in warning
        again, _ = run_event(url, "img2img_export", IMG2IMG, "export-5", prompt="a boat")
        assert again["success"]  # still serving
    finally:
        demo.close()

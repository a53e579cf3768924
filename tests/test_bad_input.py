"""Every public endpoint, given bad input: the message names the field (as the parameter gradio
reports and in the text), and the next valid request works. Most cases go through gradio_client;
NaN and infinity, which JSON clients cannot send, go as raw HTTP to the queue."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from ui import build_demo, launch_options


@pytest.fixture(scope="module")
def app(settings, manager, tmp_path_factory):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    folder = tmp_path_factory.mktemp("bad-input")
    files = {"ok": folder / "ok.png", "broken": folder / "broken.png", "text": folder / "notes.png",
             "empty": folder / "empty.png", "thin": folder / "thin.png"}
    Image.new("RGB", (64, 64), (10, 120, 200)).save(files["ok"])
    files["broken"].write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    files["text"].write_text("just some text, not an image")
    files["empty"].write_bytes(b"")
    Image.new("RGB", (2010, 10), (200, 10, 10)).save(files["thin"])
    client = Client(url, verbose=False)
    yield {"url": url, "client": client, "files": files,
           "api": client.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    demo.close()


def _image(app, name="ok"):
    return handle_file(str(app["files"][name]))


BASE = {"/txt2img": {"prompt": "a red boat", "height": 64, "width": 64, "num_inference_steps": 1, "seed": 1},
        "/img2img": {"prompt": "a red boat", "height": 64, "width": 64, "num_inference_steps": 2, "seed": 1,
                     "strength": 0.5},
        "/vl_generate": {"prompt": "a red boat", "height": 64, "width": 64, "num_inference_steps": 2, "seed": 1},
        "/vl_extract": {"prompt": "a red boat"},
        "/compare": {"prompt": "a red boat", "height": 64, "width": 64, "num_inference_steps": 2, "seed": 1,
                     "x_axis": "alpha", "x_values": "0, 1"},
        "/rewrite": {"prompt": "a fox", "max_new_tokens": 16, "seed": 1}}
IMAGES = {"/img2img": "image", "/vl_generate": "references", "/vl_extract": "references", "/compare": "references"}

CASES = [  # (endpoint, overrides, the field the message must name)
    ("/txt2img", {"height": 65}, "height"),
    ("/txt2img", {"height": 48}, "height"),
    ("/txt2img", {"width": 5000}, "width"),
    ("/txt2img", {"width": "wide"}, "width"),
    ("/txt2img", {"num_inference_steps": 0}, "num_inference_steps"),
    ("/txt2img", {"num_inference_steps": 101}, "num_inference_steps"),
    ("/txt2img", {"num_inference_steps": 2.5}, "num_inference_steps"),
    ("/txt2img", {"seed": -5}, "seed"),
    ("/txt2img", {"seed": 2**64}, "seed"),
    ("/txt2img", {"seed": "lucky"}, "seed"),
    ("/txt2img", {"guidance_scale": -1}, "guidance_scale"),
    ("/txt2img", {"guidance_scale": math.nan}, "guidance_scale"),
    ("/txt2img", {"shift": 0}, "shift"),
    ("/txt2img", {"shift": math.inf}, "shift"),
    ("/txt2img", {"prompt": ""}, "prompt"),
    ("/txt2img", {"prompt": "   "}, "prompt"),
    ("/txt2img", {"prompt": "x" * 9000}, "prompt"),
    ("/txt2img", {"negative_prompt": "x" * 5000}, "negative_prompt"),
    ("/txt2img", {"long_prompt_mode": "squash"}, "long_prompt_mode"),
    ("/txt2img", {"hidden_layer": 0}, "hidden_layer"),
    ("/txt2img", {"hidden_layer": -40}, "hidden_layer"),
    ("/txt2img", {"template": "Nope"}, "template"),
    ("/txt2img", {"attention_backend": "flash"}, "attention_backend"),
    ("/txt2img", {"loras": "/nowhere/x.safetensors"}, "loras"),
    ("/txt2img", {"loras": "x.safetensors:99"}, "loras"),
    ("/txt2img", {"force_think_block": "yes"}, "force_think_block"),
    ("/txt2img", {"thinking_content": "x" * 5000}, "thinking_content"),
    ("/img2img", {"strength": 0.05}, "strength"),
    ("/img2img", {"strength": 1.5}, "strength"),
    ("/img2img", {"strength": math.nan}, "strength"),
    ("/img2img", {"image": None}, "image"),
    ("/img2img", {"image": "broken"}, "image"),
    ("/img2img", {"image": "text"}, "image"),
    ("/img2img", {"image": "empty"}, "image"),
    ("/vl_generate", {"references": []}, "references"),
    ("/vl_generate", {"references": ["broken"]}, "references"),
    ("/vl_generate", {"references": ["thin"]}, "references"),
    ("/vl_generate", {"alpha": 1.5}, "alpha"),
    ("/vl_generate", {"alpha": math.nan}, "alpha"),
    ("/vl_generate", {"strength": math.nan}, "strength"),
    ("/vl_generate", {"blend_mode": "mix"}, "blend_mode"),
    ("/vl_generate", {"token_mode": "all"}, "token_mode"),
    ("/vl_generate", {"vl_composition": "both"}, "vl_composition"),
    ("/vl_generate", {"normalization": "z"}, "normalization"),
    ("/vl_generate", {"outlier_mode": "q"}, "outlier_mode"),
    ("/vl_generate", {"outlier_threshold": 0.5}, "outlier_threshold"),
    ("/vl_generate", {"target_std": -1}, "target_std"),
    ("/vl_generate", {"image_text_ratio": 2}, "image_text_ratio"),
    ("/vl_generate", {"vl_hidden_layer": -50}, "vl_hidden_layer"),
    ("/vl_generate", {"vl_text_hidden_layer": 3}, "vl_text_hidden_layer"),
    ("/vl_generate", {"reference_weights": "a, b"}, "reference_weights"),
    ("/vl_generate", {"reference_weights": "1, 2"}, "reference_weights"),
    ("/vl_generate", {"length_mode": "stretch"}, "length_mode"),
    ("/vl_generate", {"token_mode": "text_only", "vl_use_prompt": False, "vl_text": ""}, "token_mode"),
    ("/vl_extract", {"references": []}, "references"),
    ("/vl_extract", {"vl_think_block": "on"}, "vl_think_block"),
    ("/compare", {"x_axis": "colour"}, "x_axis"),
    ("/compare", {"x_values": ""}, "x_values"),
    ("/compare", {"x_values": "0, 2"}, "x_values"),
    ("/compare", {"cell_limit": 0}, "cell_limit"),
    ("/compare", {"batch_size": 99}, "batch_size"),
    ("/compare", {"z_axis": "seed", "z_values": "1, 2"}, "z_axis"),
    ("/compare", {"x_values": ", ".join(str(i / 100) for i in range(70))}, "cell_limit"),
    ("/rewrite", {"backend": "gpt"}, "backend"),
    ("/rewrite", {"max_new_tokens": 5000}, "max_new_tokens"),
    ("/rewrite", {"temperature": 0}, "temperature"),
    ("/rewrite", {"top_p": math.nan}, "top_p"),
    ("/rewrite", {"top_k": 500}, "top_k"),
    ("/rewrite", {"template": "Nope"}, "template"),
    ("/rewrite", {"prompt": ""}, "prompt"),
    ("/rewrite", {"backend": "openai", "model": "m", "base_url": "http://[::1/v1"}, "base_url"),
    ("/rewrite", {"backend": "openai", "model": "m", "base_url": "ftp://example"}, "base_url"),
    ("/rewrite", {"backend": "openai", "model": "", "base_url": "http://127.0.0.1:9/v1"}, "model"),
    ("/rewrite", {"image": "ok"}, "image"),
    ("/rewrite", {"timeout": 0}, "timeout"),
    ("/rewrite", {"seed": -2}, "seed"),
]


def _values(app, endpoint, overrides) -> dict:
    values = {**BASE[endpoint], **overrides}
    key = IMAGES.get(endpoint)
    if key and key not in overrides:
        values[key] = ["ok"] if key == "references" else "ok"
    for name in ("image", "references"):
        if isinstance(values.get(name), str):
            values[name] = _image(app, values[name])
        elif isinstance(values.get(name), list):
            values[name] = [_image(app, n) for n in values[name]]
    return values


def _raw(app, endpoint, values) -> httpx.Response:
    """A queue join as a raw HTTP client sends it: every parameter in order, NaN written as NaN."""
    params = app["api"][endpoint]["parameters"]
    config = httpx.get(app["url"] + "config", timeout=30).json()
    index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == endpoint[1:])
    data = []
    for p in params:
        value = values.get(p["parameter_name"], p.get("parameter_default"))
        if p["parameter_name"] in ("image", "references") and value is not None:
            value = {"path": _upload(app, app["files"]["ok"]), "meta": {"_type": "gradio.FileData"}}
            value = [value] if p["parameter_name"] == "references" else value
        data.append(value)
    body = json.dumps({"data": data, "fn_index": index, "session_hash": "raw-client"})  # allows NaN
    return httpx.post(app["url"] + "gradio_api/queue/join", content=body,
                      headers={"content-type": "application/json"}, timeout=60)


def _upload(app, path) -> str:
    with open(path, "rb") as f:
        return httpx.post(app["url"] + "gradio_api/upload", files={"files": (path.name, f)}, timeout=30).json()[0]


def _finite(values) -> bool:
    return all(not (isinstance(v, float) and not math.isfinite(v)) for v in values.values())


@pytest.mark.parametrize("endpoint,overrides,field", CASES,
                         ids=[f"{e[1:]}-{'-'.join(o)}" for e, o, _ in CASES])
def test_bad_input_names_the_field_and_the_next_request_works(app, endpoint, overrides, field):
    values = _values(app, endpoint, overrides)
    if _finite(values):
        with pytest.raises(Exception) as info:
            app["client"].predict(**values, api_name=endpoint)
        message = str(info.value)
        assert f"- {field}: " in message, message
        message = message.split(f"- {field}: ", 1)[1]
    else:
        reply = _raw(app, endpoint, values)
        assert reply.status_code == 422, reply.text
        bad = [d for d in reply.json()["detail"] if not d["is_valid"]]
        assert [d["parameter_name"] for d in bad] == [field] and "not a finite number" in bad[0]["message"]
        message = bad[0]["message"]
    assert field in message  # the text names the field too, not only the parameter
    assert app["client"].predict(**BASE["/txt2img"], api_name="/txt2img")[2]["forwards"] == 1


def test_a_raw_call_with_too_few_values_names_what_is_missing(app):
    config = httpx.get(app["url"] + "config", timeout=30).json()
    index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "txt2img")
    reply = httpx.post(app["url"] + "gradio_api/queue/join",
                       json={"data": [None, "a cat", ""], "fn_index": index, "session_hash": "raw"}, timeout=30)
    assert reply.status_code == 400  # control_image, prompt, negative_prompt given
    assert "txt2img: got 3 value(s) for 23 parameters; missing: system_prompt" in reply.json()["detail"]


def test_messages_survive_a_preset_in_the_same_session(app):
    """Gradio keeps per-session copies of components a preset updated; our checks still speak."""
    config = httpx.get(app["url"] + "config", timeout=30).json()
    deps = {d.get("api_name"): d["id"] for d in config["dependencies"]}
    session = "preset-then-bad-seed"
    reply = httpx.post(app["url"] + "gradio_api/run/predict", timeout=30,
                       json={"fn_index": deps["apply_preset"], "data": ["Turbo (8 steps)"], "session_hash": session})
    assert reply.status_code == 200 and "Turbo" in reply.text
    values = {**BASE["/txt2img"], "seed": -5}
    data = [values.get(p["parameter_name"], p.get("parameter_default")) for p in app["api"]["/txt2img"]["parameters"]]
    reply = httpx.post(app["url"] + "gradio_api/queue/join", timeout=30,
                       json={"data": data, "fn_index": deps["txt2img"], "session_hash": session})
    assert reply.status_code == 422
    assert [(d["parameter_name"], d["message"][:8]) for d in reply.json()["detail"] if not d["is_valid"]] == [
        ("seed", "seed=-5 ")]

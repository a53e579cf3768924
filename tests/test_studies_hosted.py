"""The Studies tab on a hosted app, driven from outside as an attacker would (gradio_client and raw
HTTP on loopback): a study is a job like any other (the pending limit refuses it before the
queue), an invalid study stores none of its uploads, a relative --output-dir holds wherever the
server's working folder later is and no message names a server path, and a cancelled study stops
at its next step while the app keeps serving.

The app is built with the working folder at `home` and `output_dir="outputs"`, and then the working
folder moves elsewhere (restored after the module), as a server's may.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.core.request import field_meta
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.settings import Settings
from ui import build_demo, launch_options

from .test_export_text import TXT2IMG
from .test_fairness import _wait as fair_wait
from .test_study_api import STUDY as API_STUDY

STUDY = API_STUDY.replace('"api study"', '"hosted study"')
SLOW_STUDY = STUDY.replace("height = 64\nwidth = 64", "height = 512\nwidth = 512").replace(
    "num_inference_steps = 2", "num_inference_steps = 60")
ABSOLUTE = re.compile(r"(?<![\w.])/(?:tmp|home|work|root|var|private|usr|etc)\b|[A-Za-z]:\\")


def _wait(condition, seconds=120.0, what="the condition"):
    fair_wait(condition, seconds, what)


@pytest.fixture(scope="module")
def app(tiny_cache, tmp_path_factory):
    home, elsewhere = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("elsewhere")
    Image.new("RGB", (64, 64), (200, 60, 30)).save(home / "ref.png")
    started_in = os.getcwd()
    os.chdir(home)
    try:
        settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir="outputs", hosting="hosted",
                            max_pending=2, max_steps=100, trusted_proxy="127.0.0.1")
        manager = ModelManager(settings)
        demo = build_demo(settings, manager)
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
        os.chdir(elsewhere)  # the server's working folder moves on after start-up
        yield {"url": url, "manager": manager, "demo": demo, "outputs": home / "outputs", "ref": home / "ref.png",
               "elsewhere": elsewhere}
        demo.close()
    finally:
        os.chdir(started_in)


def _index(url, api_name) -> int:
    config = httpx.get(url + "config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def _upload(url, path: Path) -> dict:
    with open(path, "rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": (path.name, f)}, timeout=30).json()[0]
    return {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


def _join(url, api_name, data, session, address) -> httpx.Response:
    return httpx.post(url + "gradio_api/queue/join", timeout=60, headers={"X-Forwarded-For": address},
                      json={"data": data, "fn_index": _index(url, api_name), "session_hash": session})


def _cancel(url, api_name, session, reply) -> None:
    httpx.post(url + "gradio_api/cancel", timeout=30, json={"session_hash": session, "fn_index": _index(url, api_name),
                                                            "event_id": reply.json()["event_id"]})


def _forwards(manager) -> list:
    """A counter of DiT forwards (a hook on the real transformer)."""
    calls = []
    manager.pipeline().transformer.register_forward_hook(lambda *args: calls.append(time.monotonic()))
    return calls


def _small(url):
    return Client(url, verbose=False).predict(prompt="a boat", height=64, width=64, seed=2, api_name="/txt2img")


def _stored_references(app) -> list:
    """What studies/references/ holds, in the output folder and under the working folder of the moment."""
    found = []
    for outputs in (app["outputs"], app["elsewhere"] / "outputs"):
        folder = outputs / "studies" / "references"
        found += sorted(p.relative_to(outputs) for p in folder.rglob("*")) if folder.exists() else []
    return found


@pytest.mark.parametrize("api_name", ["run_study_text", "run_study_file", "resume_study"])
def test_a_client_at_its_pending_limit_is_refused_a_study_before_the_queue(app, api_name, tmp_path):
    """Running, or resuming, a study is a job: with two jobs pending, a third is refused by its
    validator (a 422 naming the limit), never queued."""
    url, manager = app["url"], app["manager"]
    session, address = f"greedy-{api_name}", f"203.0.113.{10 + len(api_name)}"
    owned = Client(url, verbose=False)
    owned.session_hash = session  # a study of this session's own, to resume
    progress, _ = owned.predict(STUDY, [handle_file(str(app["ref"]))], api_name="/run_study_text")
    calls = _forwards(manager)
    slow = [None] + [{"prompt": "slow", "height": 512, "width": 512, "num_inference_steps": 100, "seed": 1}.get(
        f, field_meta(f)["default"]) for f in TXT2IMG]
    held = [_join(url, "txt2img", slow, session, address) for _ in range(2)]
    try:
        assert all(r.status_code == 200 for r in held), [r.text for r in held]
        _wait(lambda: len(calls) >= 1, what="the first job to start")
        reference = _upload(url, app["ref"])
        if api_name == "run_study_text":
            data = [STUDY, [reference]]
        elif api_name == "run_study_file":
            (tmp_path / "study.toml").write_text(STUDY)
            data = [_upload(url, tmp_path / "study.toml"), [reference], ""]  # no Prompt: the file's
        else:  # as the page does: Refresh lists this session's studies (the dropdown's choices), then Resume
            listed = httpx.post(url + "gradio_api/run/predict", timeout=30, headers={"X-Forwarded-For": address},
                                json={"fn_index": _index(url, "show_studies"), "data": [], "session_hash": session})
            assert listed.status_code == 200, listed.text
            data = [progress.split("**")[1]]
        studies = set((app["outputs"] / "studies").glob("*-study-*"))
        refused = _join(url, api_name, data, session, address)
        assert refused.status_code == 422, refused.text  # a validation error: never queued
        assert "queue: you already have 2 job(s) waiting or running here (the limit is 2)" in refused.text
        assert set((app["outputs"] / "studies").glob("*-study-*")) == studies
    finally:
        for reply in held:
            if reply.status_code == 200:
                _cancel(url, "txt2img", session, reply)
        _wait(lambda: not manager.generation_lock.locked(), what="the GPU slot to be free")


@pytest.mark.parametrize("study,message", [
    (STUDY.replace("alpha = [0.0, 0.5]", "wobble = [1, 2]"), r"axes\.wobble is not a request field"),
    ("name = [", r"study_file: study\.toml is not a readable TOML file"),
    (STUDY.replace("[0.0, 0.5]", "[0.0, 1.5]"), r"axes\.alpha: alpha=1\.5 is out of range"),
])
def test_an_invalid_study_file_stores_none_of_its_uploads(app, tmp_path, study, message):
    """A client sends an invalid study with a large upload over and over: the server's disk
    does not grow (the uploads are stored only once a checked study starts)."""
    url = app["url"]
    before = _stored_references(app)
    big = tmp_path / "big.png"
    Image.effect_noise((512, 512), 64).convert("RGB").save(big)  # a fresh file: its hash was never stored
    (tmp_path / "study.toml").write_text(study)
    reply = _join(url, "run_study_file", [_upload(url, tmp_path / "study.toml"), [_upload(url, big)], ""],
                  "invalid-study", "198.51.100.20")
    if reply.status_code == 200:  # queued after all: wait for its end, then see what it left
        with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": "invalid-study"},
                          timeout=120) as stream:
            for line in stream.iter_lines():
                if "process_completed" in line:
                    break
    assert _stored_references(app) == before
    assert reply.status_code == 422 and re.search(message, reply.text), reply.text
    assert not ABSOLUTE.search(reply.text), reply.text


def test_a_hosted_study_may_name_no_server_file(app, tmp_path):
    url = app["url"]
    for key in ("control_image", "mask_image", "structure_image"):
        text = STUDY.replace("seeds = [1]\n", f'seeds = [1]\n{key} = "{app["ref"]}"\n')
        reply = _join(url, "run_study_text", [text, [_upload(url, app["ref"])]], "path-prober", "198.51.100.21")
        assert reply.status_code == 422 and "a hosted app reads no server paths" in reply.text, reply.text
        assert f"{key} is not available here" in reply.text and str(app["ref"]) not in reply.text


def test_a_relative_output_dir_holds_after_the_working_folder_moves(app):
    client = Client(app["url"], verbose=False)
    progress, _ = client.predict(STUDY, [handle_file(str(app["ref"]))], api_name="/run_study_text")
    assert "2 / 2 cells · finished" in progress, progress
    assert not ABSOLUTE.search(progress), progress
    name = progress.split("**")[1]
    folder = app["outputs"] / "studies" / name
    assert (folder / "study.json").is_file() and len(list((folder / "cells").glob("*.png"))) == 2
    assert not (app["elsewhere"] / "outputs").exists()  # nothing written under the working folder of the moment
    assert [s["name"] for s in client.predict(api_name="/list_my_studies")] == [name]
    study, files = client.predict(name, api_name="/read_study")
    assert study["info"]["status"] == "finished" and len(files) >= 3
    assert not ABSOLUTE.search(str(study["info"]["study"]["references"])), study["info"]["study"]["references"]


def test_a_cancelled_study_stops_at_its_next_step_and_the_app_keeps_serving(app):
    url, manager = app["url"], app["manager"]
    _small(url)
    calls = _forwards(manager)
    before = set((app["outputs"] / "studies").glob("*-study-*"))
    client = Client(url, verbose=False)
    job = client.submit(SLOW_STUDY, [handle_file(str(app["ref"]))], api_name="/run_study_text")
    _wait(lambda: len(calls) >= 3, what="three denoise steps of the first cell")
    job.cancel()
    at_cancel = len(calls)
    _wait(lambda: not manager.generation_lock.locked(), what="the study to stop")
    time.sleep(0.5)  # a study that ran on would start its next cell's steps by now
    assert len(calls) - at_cancel <= 2, f"{len(calls) - at_cancel} steps ran after the cancel"
    (folder,) = set((app["outputs"] / "studies").glob("*-study-*")) - before
    assert len(list((folder / "cells").glob("*.png"))) < 2  # fewer cells than the study has
    assert _small(url)[2]["forwards"] == 8  # the slot is free and the app keeps serving

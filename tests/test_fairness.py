"""A fair queue: what one client does cannot hold up another, and a cancelled job stops.

Loopback only: a trickling OpenAI-compatible server, huge prompts, cancels and a per-session
pending limit, against the app in hosted mode driven through gradio_client.
"""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import field_meta
from llm_dit.runtime.settings import Settings
from ui import build_demo, launch_options

from . import openai_server
from .test_export_text import TXT2IMG


def _wait(condition, seconds=60.0, what="the condition"):
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def app(tiny_cache, tmp_path_factory):
    server = openai_server.start()
    root = tmp_path_factory.mktemp("fair")
    servers = root / "rewrite.toml"
    servers.write_text(f'[servers.lab]\nbase_url = "http://127.0.0.1:{server.server_address[1]}/v1"\n'
                       'models = ["trickle", "stream"]\n')
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(root / "outputs"), hosting="hosted",
                        rewrite_servers=str(servers), max_pending=2)
    manager = ModelManager(settings)
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    yield {"url": url, "manager": manager, "server": server, "outputs": root / "outputs"}
    demo.close()
    server.shutdown()


def _small(client, **kw):
    return client.predict(**{"prompt": "a boat", "height": 64, "width": 64, "seed": 2, **kw}, api_name="/txt2img")


def _forwards(manager) -> list:
    """A counter of DiT forwards (a hook on the real transformer)."""
    calls = []
    manager.pipeline().transformer.register_forward_hook(lambda *args: calls.append(time.monotonic()))
    return calls


def test_a_trickling_rewrite_server_does_not_hold_up_a_generation(app):
    """HTTP rewrites have their own concurrency group: a stuck one never takes the GPU slot."""
    slow, other = Client(app["url"], verbose=False), Client(app["url"], verbose=False)
    job = slow.submit(prompt="a fox", backend="openai", server="lab", model="trickle", timeout=120.0,
                      api_name="/rewrite")
    _wait(lambda: any(r["body"]["model"] == "trickle" for r in app["server"].requests), what="the trickle")
    _, _, meta = _small(other)
    assert meta["forwards"] == 8 and not job.done()  # it ran while the rewrite still trickles
    job.cancel()


def test_the_rewrite_timeout_bounds_the_whole_reply(app):
    client = Client(app["url"], verbose=False)
    started = time.monotonic()
    with pytest.raises(Exception, match=r"did not finish its reply within 2 s"):
        client.predict(prompt="a fox", backend="openai", server="lab", model="trickle", timeout=2.0,
                       api_name="/rewrite")
    assert time.monotonic() - started < 30  # the server would trickle for 5 minutes


def test_a_huge_prompt_is_refused_before_the_queue(app):
    client = Client(app["url"], verbose=False)
    with pytest.raises(Exception, match=r"- prompt: prompt is 1,000,000 characters long: the limit is 8,000"):
        _small(client, prompt="x" * 1_000_000)
    assert _small(client)[2]["forwards"] == 8


def test_a_cancelled_job_stops_at_the_next_step_and_saves_nothing(app):
    manager = app["manager"]
    client = Client(app["url"], verbose=False)
    _small(client)  # models loaded
    calls = _forwards(manager)
    pngs = set(app["outputs"].glob("*.png"))
    job = client.submit(prompt="a slow one", height=512, width=512, num_inference_steps=60, seed=1,
                        api_name="/txt2img")
    _wait(lambda: len(calls) >= 3, what="three denoise steps")
    job.cancel()
    at_cancel = len(calls)
    _wait(lambda: not manager.generation_lock.locked(), what="the job to stop")
    assert len(calls) - at_cancel <= 2, f"{len(calls) - at_cancel} steps ran after the cancel"
    assert set(app["outputs"].glob("*.png")) == pngs  # nothing saved
    assert _small(client)[2]["forwards"] == 8  # and the app keeps serving


def test_a_job_whose_client_disconnects_stops_and_saves_nothing(app):
    """The page closes (its event stream ends) while its job runs: the job stops long before its
    end and saves nothing. The handler asks every 0.1 s whether the page still listens; a tiny
    model's step takes ~25 ms, so a few more steps run (on a GPU at full size, about one)."""
    manager = app["manager"]
    _small(Client(app["url"], verbose=False))  # models loaded
    calls = _forwards(manager)
    pngs = set(app["outputs"].glob("*.png"))
    config = httpx.get(app["url"] + "config", timeout=30).json()
    index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "txt2img")
    values = {"prompt": "a page that leaves", "height": 512, "width": 512, "num_inference_steps": 100, "seed": 1}
    data = [None] + [values.get(f, field_meta(f)["default"]) for f in TXT2IMG]  # no control image
    join = httpx.post(app["url"] + "gradio_api/queue/join", timeout=30,
                      json={"data": data, "fn_index": index, "session_hash": "a-page-that-leaves"})
    assert join.status_code == 200, join.text
    with httpx.stream("GET", app["url"] + "gradio_api/queue/data", params={"session_hash": "a-page-that-leaves"},
                      timeout=120) as stream:
        lines = stream.iter_lines()  # held: an abandoned line iterator would close the stream right away
        for line in lines:
            if '"process_starts"' in line:
                break
        _wait(lambda: len(calls) >= 3, what="three denoise steps")
    at_close = len(calls)  # the stream is closed: the page is gone
    _wait(lambda: not manager.generation_lock.locked(), what="the job to stop")
    assert len(calls) < 50, f"{len(calls) - at_close} of the {100 - at_close} steps left ran after the page left"
    assert set(app["outputs"].glob("*.png")) == pngs  # nothing saved
    assert _small(Client(app["url"], verbose=False))[2]["forwards"] == 8


def test_one_session_cannot_fill_the_queue(app):
    manager = app["manager"]
    greedy, polite = Client(app["url"], verbose=False), Client(app["url"], verbose=False)
    _small(greedy)
    calls = _forwards(manager)
    slow = {"prompt": "slow", "height": 512, "width": 512, "num_inference_steps": 60, "api_name": "/txt2img"}
    first = greedy.submit(**slow)
    _wait(lambda: len(calls) >= 1, what="the first job to start")
    second = greedy.submit(**slow)
    _wait(lambda: second.status().code.name in ("QUEUE", "PROCESSING", "IN_QUEUE"), what="the second to queue")
    with pytest.raises(Exception, match=r"queue: you already have 2 job\(s\) waiting or running"):
        greedy.predict(**slow)
    queued_polite = polite.submit(prompt="a boat", height=64, width=64, api_name="/txt2img")
    second.cancel()
    first.cancel()
    assert queued_polite.result(timeout=120)[2]["forwards"] == 8

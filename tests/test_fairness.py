"""A fair queue: what one client does cannot hold up another, and a cancelled job stops.

Loopback only: a trickling OpenAI-compatible server, huge prompts, cancels, a per-session and a
per-client pending limit, against the app in hosted mode driven through gradio_client and raw
requests. The operator's proxy is 127.0.0.1 (`--trusted-proxy`), so a request's
X-Forwarded-For plays the client's address, as on a Space.
"""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from llm_dit.runtime.models import ModelManager
from llm_dit.core.request import field_meta
from llm_dit.runtime.settings import Settings
from starlette.requests import Request
from ui import build_demo, launch_options
from ui.limits import client_address
from ui.tabs.compare import FIELDS as COMPARE_FIELDS, SPEC

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
                        rewrite_servers=str(servers), max_pending=2, max_steps=100, trusted_proxy="127.0.0.1")
    manager = ModelManager(settings)
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    yield {"url": url, "manager": manager, "server": server, "outputs": root / "outputs", "demo": demo}
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
    data = _txt2img_data(prompt="a page that leaves", height=512, width=512, num_inference_steps=100, seed=1)
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


def _index(url, api_name) -> int:
    config = httpx.get(url + "config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def _txt2img_data(**values) -> list:
    return [None] + [values.get(f, field_meta(f)["default"]) for f in TXT2IMG]  # no control image


def _slot_held(app, address: str, session: str) -> tuple:
    """A slow txt2img from `address` holding the GPU slot: (txt2img's fn_index, the slow job's
    data, the blocker's join reply)."""
    url = app["url"]
    _small(Client(url, verbose=False))
    calls = _forwards(app["manager"])
    index = _index(url, "txt2img")
    slow = _txt2img_data(prompt="slow", height=512, width=512, num_inference_steps=100, seed=1)
    blocker = httpx.post(url + "gradio_api/queue/join", timeout=30, headers={"X-Forwarded-For": address},
                         json={"data": slow, "fn_index": index, "session_hash": session})
    assert blocker.status_code == 200, blocker.text
    _wait(lambda: len(calls) >= 1, what="the blocker to hold the GPU slot")
    return index, slow, blocker


def test_fresh_session_hashes_and_call_do_not_make_a_new_client(app):
    """One address sends 31 slow jobs, each with a fresh session hash, by /queue/join and by
    /call: it gets its share (8 of the 32 places) and the rest is refused before the queue; a
    second client is then still admitted and served."""
    url = app["url"]
    index, slow, blocker = _slot_held(app, "192.0.2.1", "blocker")
    greedy = {"X-Forwarded-For": "203.0.113.5"}
    replies = []
    for i in range(31):
        if i % 2:
            replies.append(("call", httpx.post(url + "gradio_api/call/txt2img", json={"data": slow}, headers=greedy,
                                               timeout=30)))
        else:
            replies.append((f"fresh-{i}", httpx.post(url + "gradio_api/queue/join", headers=greedy, timeout=30,
                                                     json={"data": slow, "fn_index": index,
                                                           "session_hash": f"fresh-{i}"})))
    accepted = [(session, r.json()["event_id"]) for session, r in replies if r.status_code == 200]
    refused = [r for _, r in replies if r.status_code != 200]
    assert len(accepted) == 8 and len(refused) == 23
    assert all(r.status_code == 422 and "your address already has 8 job(s)" in r.text for r in refused)
    polite = Client(url, verbose=False).submit(prompt="a boat", height=64, width=64, api_name="/txt2img")
    for session, event_id in accepted + [("blocker", blocker.json()["event_id"])]:
        httpx.post(url + "gradio_api/cancel", timeout=30,
                   json={"session_hash": event_id if session == "call" else session, "event_id": event_id,
                         "fn_index": index})
    assert polite.result(timeout=300)[2]["forwards"] == 8


def test_a_burst_of_parallel_joins_gets_no_more_than_its_share(app):
    """Gradio runs the validators of simultaneous joins side by side and records the events after:
    30 joins at once from one address (fresh session each) got 22 through a limit of 8 when only
    gradio's record was counted."""
    from concurrent.futures import ThreadPoolExecutor

    url, manager = app["url"], app["manager"]
    index, slow, blocker = _slot_held(app, "192.0.2.2", "burst-blocker")

    def join(i):
        return f"burst-{i}", httpx.post(url + "gradio_api/queue/join", timeout=60,
                                        headers={"X-Forwarded-For": "203.0.113.77"},
                                        json={"data": slow, "fn_index": index, "session_hash": f"burst-{i}"})

    with ThreadPoolExecutor(30) as pool:
        replies = list(pool.map(join, range(30)))
    accepted = [(session, r.json()["event_id"]) for session, r in replies if r.status_code == 200]
    try:
        assert len(accepted) == 8, [r.text[:120] for _, r in replies if r.status_code != 200][:3]
    finally:
        for session, event_id in accepted + [("burst-blocker", blocker.json()["event_id"])]:
            httpx.post(url + "gradio_api/cancel", timeout=30,
                       json={"session_hash": session, "event_id": event_id, "fn_index": index})
    _wait(lambda: not manager.generation_lock.locked(), what="the GPU slot to be free")


def _scope_request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (peer, 50000), "headers": headers, "method": "POST", "path": "/"})


def test_a_forwarded_address_is_believed_only_from_the_trusted_proxy():
    proxy = "10.0.0.5"
    assert client_address(_scope_request(proxy, "6.6.6.6, 198.51.100.7"), proxy) == "198.51.100.7"
    assert client_address(_scope_request("198.51.100.9", "1.2.3.4"), proxy) == "198.51.100.9"  # forged: ignored
    assert client_address(_scope_request(proxy, "1.2.3.4"), "") == proxy  # no proxy configured
    assert client_address(_scope_request(proxy, None), proxy) == proxy
    assert client_address(_scope_request("10.1.2.3", "198.51.100.7"), "10.0.0.0/8") == "198.51.100.7"
    assert client_address(_scope_request("11.1.2.3", "198.51.100.7"), "10.0.0.0/8") == "11.1.2.3"


def test_an_abandoned_vl_text_sweep_runs_no_extraction_after_its_close(app, tmp_path):
    """A 32-value vl_text sweep's stream closes after its first extraction: its prefetch loop
    stops instead of running every extraction, and the GPU slot is released only after its worker
    stopped. How many run meanwhile is a race between the tiny model's extractions (a few ms each)
    and the server noticing the close (gradio's stream check, then our 0.1 s tick): 4 were seen on
    a busy machine, so the bound is a third of the sweep, far from the 32 that ran before the fix."""
    from PIL import Image

    url, manager, demo = app["url"], app["manager"], app["demo"]
    Image.new("RGB", (64, 64), (30, 90, 200)).save(tmp_path / "ref.png")
    with open(tmp_path / "ref.png", "rb") as f:
        uploaded = httpx.post(url + "gradio_api/upload", files={"files": ("ref.png", f)}, timeout=30).json()[0]
    reference = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": "ref.png"}
    spec = {"x_axis": "vl_text", "x_values": "|".join(f"style {i}" for i in range(32)), "y_axis": "", "y_values": "",
            "z_axis": "", "z_values": "", "cell_limit": 64, "batch_size": 1, "diff_base": -1}
    values = {"prompt": "a sweep", "height": 64, "width": 64, "alpha": 0.5, "vl_use_prompt": False}
    data = [[reference], None] + [spec[k] for k in SPEC] + [values.get(f, field_meta(f)["default"])
                                                           for f in COMPARE_FIELDS]
    before = manager.vl_cache.misses
    join = httpx.post(url + "gradio_api/queue/join", timeout=30,
                      json={"data": data, "fn_index": _index(url, "compare"), "session_hash": "a-sweep-that-leaves"})
    assert join.status_code == 200, join.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": "a-sweep-that-leaves"},
                      timeout=120) as stream:
        lines = stream.iter_lines()  # held open until the first extraction ran
        for line in lines:
            if '"process_starts"' in line:
                break
        _wait(lambda: manager.vl_cache.misses > before, what="the first extraction")
    at_close = manager.vl_cache.misses - before
    _wait(lambda: not any(demo._queue.active_jobs), what="the sweep to stop")
    after = manager.vl_cache.misses - before
    assert after - at_close <= 10, f"{after - at_close} of the {32 - at_close} extractions left ran after the close"


def test_a_cancelled_handler_ends_only_after_its_worker_stopped():
    """gradio frees a concurrency slot when the handler's task ends: a cancelled task must not end
    while its worker thread still runs (the next job would work beside it). The job here cannot
    stop until the gate opens: until then the cancelled task stays pending."""
    import asyncio
    import threading

    from llm_dit.serving import cancel
    from ui.common import run_cancellable

    started, gate, exited = threading.Event(), threading.Event(), threading.Event()

    def job():
        try:
            started.set()
            gate.wait()  # e.g. a model load that cannot look at the stop event
            cancel.check()
        finally:
            exited.set()

    async def scenario():
        async def handler():
            async for _ in run_cancellable(job, stream=False):
                pass

        task = asyncio.create_task(handler())
        await asyncio.to_thread(started.wait)
        task.cancel()
        await asyncio.sleep(0.3)
        pending_while_working = not task.done()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pending_while_working

    assert asyncio.run(scenario()) and exited.is_set()

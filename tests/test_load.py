"""Load: several clients at once get every result, their own; memory stays flat over many requests."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from gradio_client import Client

from ui import build_demo, launch_options

CLIENTS, JOBS = 8, 5


@pytest.fixture(scope="module")
def url(settings, manager):
    demo = build_demo(settings, manager)
    _, address, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    yield address
    demo.close()


def _job(client, who: int, n: int):
    prompt = f"client {who} job {n}: a lighthouse"
    _, seed, meta = client.predict(prompt=prompt, height=64, width=64, num_inference_steps=1, seed=1000 * who + n,
                                   api_name="/txt2img")
    return who, n, seed, meta["request"]["prompt"]


def test_eight_clients_five_jobs_each_all_correct_none_lost(url):
    clients = [Client(url, verbose=False) for _ in range(CLIENTS)]

    def run(who):
        return [_job(clients[who], who, n) for n in range(JOBS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [r for batch in pool.map(run, range(CLIENTS)) for r in batch]
    assert len(results) == CLIENTS * JOBS
    for who, n, seed, prompt in results:  # each client got its own image back
        assert seed == 1000 * who + n and prompt == f"client {who} job {n}: a lighthouse"


def test_memory_stays_flat_over_a_hundred_requests(url):
    client = Client(url, verbose=False)
    for n in range(10):  # warm: models, caches, gradio's own first-use allocations
        _job(client, 0, n % 4)
    gc.collect()
    before = psutil.Process().memory_info().rss
    for n in range(100):
        _job(client, 1, n % 4)
    gc.collect()
    growth = psutil.Process().memory_info().rss / before - 1
    assert growth < 0.05, f"RSS grew {growth:.1%} over 100 requests"

"""First run without weights: a hub id that is not cached is probed within hub_timeout, announced
(size, files, cache folder), downloaded with progress and loaded through the real from_pretrained;
an unreachable hub fails within seconds with the fix, and the message stays on the page.

The hub tests run the app in a subprocess (huggingface_hub reads HF_ENDPOINT, HF_HOME and
HF_HUB_OFFLINE at import; this test process is offline) against loopback servers from
`tests.fake_hub`: a blackhole that never answers, and a fake hub serving the tiny checkpoint.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from llm_dit.runtime.models import ModelLoadError, ModelManager
from llm_dit.runtime.settings import ZIMAGE_REPO, Settings

from .fake_hub import Blackhole, FakeHub

ROOT = Path(__file__).resolve().parent.parent
START_S = 240  # a cold start imports torch, diffusers and gradio on a busy 2-core machine


@contextmanager
def app(tmp: Path, endpoint: str, *args: str):
    """`app.py` in a subprocess whose hub is `endpoint` and whose cache is fresh under `tmp`;
    yields (url, log lines so far)."""
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_OFFLINE": "0",
           "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.Popen([sys.executable, "app.py", "--output-dir", str(tmp / "outputs"), "--host", "127.0.0.1",
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    started: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if match := re.search(r"Running on local URL:\s+(\S+)", line):
                started.put(match[1])
        started.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = started.get(timeout=START_S)
        assert url, "the app exited:\n" + "".join(lines[-40:])
        yield url, lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _generate(url: str):
    """One txt2img click through the API; returns (job, progress descriptions seen, seconds)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    started = time.monotonic()
    job = client.submit(prompt="a red fox in the snow", height=64, width=64, seed=7, api_name="/txt2img")
    seen = []
    while not job.done():
        for unit in job.status().progress_data or ():
            if unit.desc and (unit.desc, unit.index, unit.length) not in seen:
                seen.append((unit.desc, unit.index, unit.length))
        time.sleep(0.05)
    return job, seen, time.monotonic() - started


# ---- in this process (offline) --------------------------------------------------------------------
def test_offline_hub_id_fails_at_once_and_the_problem_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    manager = ModelManager(Settings(model_path=ZIMAGE_REPO, output_dir=str(tmp_path / "out")))
    with pytest.raises(ModelLoadError) as err:
        manager.pipeline()
    text = str(err.value)
    assert f"hub id '{ZIMAGE_REPO}'" in text and str(tmp_path / "hub") in text
    assert "HF_HUB_OFFLINE is set" in text and "hub is not asked" in text
    assert f"hf download {ZIMAGE_REPO} --local-dir DIR" in text and "--model-path DIR" in text and "--tiny" in text
    assert manager.load_problem == text


def test_hosted_message_names_no_server_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    manager = ModelManager(Settings(model_path=ZIMAGE_REPO, hosting="hosted", output_dir=str(tmp_path / "out")))
    with pytest.raises(ModelLoadError) as err:
        manager.pipeline()
    assert str(tmp_path) not in str(err.value) and "server log" in str(err.value)
    assert manager.load_problem == str(err.value)


def test_the_banner_names_what_a_first_run_downloads(monkeypatch, tmp_path, settings, manager):
    from ui.first_run import status_text
    from ui.studio import Studio

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    text = status_text(Studio.create(Settings(output_dir=str(tmp_path / "out"))))
    assert "not downloaded yet" in text and str(tmp_path / "hub") in text
    assert "`Tongyi-MAI/Z-Image-Turbo`" in text and "`Qwen/Qwen3-VL-4B-Instruct`" in text
    assert "asked from the hub on first use" in text and "--model-path DIR" in text
    hosted = status_text(Studio.create(Settings(hosting="hosted", output_dir=str(tmp_path / "out"))))
    assert "`Tongyi-MAI/Z-Image-Turbo`" in hosted and str(tmp_path) not in hosted and "--model-path" not in hosted
    assert status_text(Studio.create(settings, manager)) == ""  # --tiny: nothing to download


def test_the_announcement_says_size_files_and_where_and_hosted_no_path():
    from llm_dit.runtime.download import Download, human_size

    files = (("transformer/a.safetensors", 32_900_000_000), ("model_index.json", 512))
    download = Download(ZIMAGE_REPO, files, ("*",), "/srv/hf/hub", "https://huggingface.co")
    assert download.announcement() == (f"Downloading {ZIMAGE_REPO}: 32.9 GB in 2 files into /srv/hf/hub "
                                       f"(first use only)")
    assert download.announcement(hosted=True) == f"Downloading {ZIMAGE_REPO}: 32.9 GB in 2 files (first use only)"
    assert [human_size(n) for n in (999, 1000, 4_660_000)] == ["999 bytes", "1.0 kB", "4.7 MB"]


# ---- the app in a subprocess, against loopback hubs ---------------------------------------------
def test_a_mute_hub_fails_the_first_click_within_the_deadline(tmp_path):
    """The hub accepts connections and never answers: the probe's deadline (2 s) ends the click,
    with the message naming the hub, the repo, the cache and the fix."""
    from gradio_client.exceptions import AppError

    with Blackhole() as hole, app(tmp_path, hole.url, "--hub-timeout", "2") as (url, _):
        job, _, seconds = _generate(url)
        with pytest.raises(AppError) as err:
            job.result()
    print(f"\nfirst click against a mute hub failed after {seconds:.1f} s (hub_timeout 2 s)")
    text = str(err.value)
    assert f"the hub at {hole.url} did not answer within 2 s" in text  # the probe's deadline ended it
    assert f"hub id '{ZIMAGE_REPO}'" in text and str(tmp_path / "hf-home" / "hub") in text
    assert f"hf download {ZIMAGE_REPO} --local-dir DIR" in text and "--tiny" in text
    assert seconds < 20  # not the library's minutes of retries (the deadline is what the message says)


def test_first_run_downloads_with_progress_then_the_cache_serves(tmp_path, zimage_dir):
    weights = re.compile(r"^(model_index\.json|scheduler/|tokenizer/|(text_encoder|transformer|vae)/.*\.(json|safetensors)$)")
    with FakeHub({ZIMAGE_REPO: zimage_dir}, extra={"README.md": b"# not needed\n"}, chunk_delay_s=0.1) as hub:
        size = hub.size(ZIMAGE_REPO, weights)
        with app(tmp_path, hub.url) as (url, log):
            job, seen, seconds = _generate(url)
            image, seed, metadata = job.result()
        print(f"\nfirst run: download of {size / 1e6:.1f} MB and generation in {seconds:.1f} s; "
              f"{len(hub.requests)} hub requests")
        announced = [d for d, _, _ in seen if d.startswith(f"Downloading {ZIMAGE_REPO}:")]
        assert announced, f"no download progress reached the client: {seen}"
        files = sum(1 for name in hub.repos[ZIMAGE_REPO][1] if weights.search(name))
        expected = (f"Downloading {ZIMAGE_REPO}: {size / 1e6:.1f} MB in {files} files into "
                    f"{tmp_path / 'hf-home' / 'hub'} (first use only)")
        assert announced[0] == expected and any(expected in line for line in log)
        progress = [(index, length) for d, index, length in seen if d == expected]
        assert all(length == size for _, length in progress)
        assert any(0 < index < size for index, _ in progress), progress  # seen part-way, not only at the end
        assert Path(image).is_file() and metadata["model"] == ZIMAGE_REPO
        assert not any("README.md" in path for _, path in hub.requests)  # only the loaders' files
        # nothing quantized: no import-time noise of torchao (which transformers imports anyway)
        assert not [line for line in log if "torchao" in line or "_pytree" in line], "".join(log)

        first = len(hub.requests)
        with app(tmp_path, hub.url) as (url, _):
            job, seen, seconds = _generate(url)
            job.result()
        print(f"second run (cache): generation in {seconds:.1f} s; {len(hub.requests) - first} hub requests")
        assert len(hub.requests) == first  # the cached snapshot is used without asking the hub
        assert not any(d.startswith("Downloading") for d, _, _ in seen)

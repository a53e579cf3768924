"""Resource holes of a hosted app, closed: a sweep's or study's batch_size against a batch budget,
an upload request's files together against an upload budget, and --output-keep over the study
folders under studies/.

The HTTP attacks go over loopback to a hosted app with the tiny models (like tests/test_hosting.py);
the budget arithmetic and the pruning are checked directly.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.core.request import VLRequest
from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.settings import Settings
from llm_dit.serving.budgets import HOSTED, LOCAL, MAX_REFERENCES, MULTIPART_SLACK
from llm_dit.serving.outputs import OutputFolder
from llm_dit.serving.policy import from_settings
from ui import build_demo, launch_options

UPLOAD_MB = 1
UPLOAD_BUDGET = UPLOAD_MB * 2**20 * MAX_REFERENCES + MULTIPART_SLACK  # 9,437,184 bytes
KEEP = 20
OLD_FINISHED = "20200101-000000-compare-0123456789abcdef"
OLD_RUNNING = "20200101-000001-study-fedcba9876543210"


def _study_folder(root: Path, name: str, status: str, files: int, mtime: float) -> Path:
    folder = root / name
    (folder / "cells").mkdir(parents=True)
    for i in range(files - 1):
        (folder / "cells" / f"cell{i:04d}.png").write_bytes(b"png")
    (folder / "study.json").write_text(json.dumps({"status": status, "cells": files - 1}))
    os.utime(folder / "study.json", (mtime, mtime))
    return folder


@pytest.fixture(scope="module")
def hosted(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets-hosted")
    studies = root / "outputs" / "studies"
    # left by earlier visitors: a finished sweep and a study still running, 30 files each
    _study_folder(studies, OLD_FINISHED, "finished", 30, 1_600_000_000)
    _study_folder(studies, OLD_RUNNING, "running", 30, 1_500_000_000)
    Image.new("RGB", (64, 64), (30, 120, 200)).save(root / "ref.png")
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(root / "outputs"), hosting="hosted",
                        max_upload_mb=UPLOAD_MB, output_keep=KEEP, trusted_proxy="127.0.0.1")
    demo = build_demo(settings, ModelManager(settings))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings, environ={}))
    yield {"url": url, "client": Client(url, verbose=False), "root": root, "studies": studies}
    demo.close()


def _message(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


# ---- F10: batch_size against a batch budget -----------------------------------------------------------
def _cells(count: int, side: int, steps: int = 2) -> list:
    return [VLRequest(prompt="x", height=side, width=side, num_inference_steps=steps, seed=i) for i in range(count)]


def test_a_batch_over_the_batch_budget_is_refused_with_what_fits():
    """16 cells of 1024² are within the cells (64), pixels (4 MP each) and work (32 of 400) budgets;
    generated 16 at once they are 16 MP in one pipeline call."""
    with pytest.raises(ValueError) as info:
        HOSTED.check_sweep(_cells(16, 1024), batch_size=16, kind="sweep")
    assert str(info.value) == (
        "batch_size=16: this sweep would generate 16 cells of 1024×1024 together, 16.0 MP of output per batch, "
        "over this app's budget of 4.0 MP (4,194,304 px) per batch: use batch_size=4 or fewer, or smaller cells.")
    HOSTED.check_sweep(_cells(16, 1024), batch_size=4, kind="sweep")  # what the message says fits, fits
    HOSTED.check_sweep(_cells(16, 512), batch_size=16, kind="sweep")  # 16 × 0.25 MP = 4 MP: the budget exactly
    LOCAL.check_sweep(_cells(16, 1024), batch_size=16)  # locally, no batch budget


def test_only_cells_of_one_size_share_a_batch():
    """The runner batches only cells of one size: one 2048² cell beside fifteen 512² cells is a
    batch of 4 MP at most, whatever batch_size says; four 2048² cells with batch_size 2 are 8 MP."""
    HOSTED.check_sweep(_cells(1, 2048) + _cells(15, 512), batch_size=16, kind="study")
    with pytest.raises(ValueError, match=r"^batch_size=2: this study would generate 2 cells of 2048×2048 together, "
                                         r"8\.0 MP .* use batch_size=1 or fewer"):
        HOSTED.check_sweep(_cells(4, 2048), batch_size=2, kind="study")


def test_study_refusals_speak_of_the_study_not_a_sweeps_cell_limit():
    with pytest.raises(ValueError) as info:
        HOSTED.check_sweep(_cells(65, 64), kind="study")
    assert str(info.value) == ("study: this study has 65 cells, over this app's budget of 64 cells per study: use "
                               "fewer references, axis values or seeds (64 cells at most).")
    with pytest.raises(ValueError) as info:
        HOSTED.check_sweep(_cells(10, 1024, steps=50), kind="study")
    message = str(info.value)
    assert message.startswith("study: this study's 10 cells are 500 megapixel-steps of work, over this app's "
                              "budget of 400 per request: use 8 cells or fewer")
    assert "sweep" not in message and "cell_limit" not in message


def test_the_batch_and_upload_budgets_follow_the_mode_and_the_operator():
    hosted, local = from_settings(Settings(hosting="hosted")).budgets, from_settings(Settings(hosting="local")).budgets
    assert (hosted.batch_pixels, local.batch_pixels) == (2048 * 2048, 0)
    assert (hosted.upload_bytes, local.upload_bytes) == (50 * 2**20 * MAX_REFERENCES + MULTIPART_SLACK, 0)
    assert from_settings(Settings(hosting="hosted", max_batch_pixels=0)).budgets.batch_pixels == 0
    assert from_settings(Settings(hosting="local", max_batch_pixels=2**20)).budgets.batch_pixels == 2**20
    assert "batches up to 4.0 MP of output" in hosted.describe()
    with pytest.raises(ValueError, match=r"^max_batch_pixels=-2: use -1"):
        Settings(max_batch_pixels=-2)


def test_a_sweeps_batch_size_is_refused_before_the_queue(hosted):
    message = _message(lambda: hosted["client"].predict(
        references=[handle_file(str(hosted["root"] / "ref.png"))], x_axis="seed",
        x_values=",".join(map(str, range(16))), cell_limit=16, batch_size=16, prompt="x", height=1024, width=1024,
        num_inference_steps=2, api_name="/compare"))
    assert "batch_size=16: this sweep would generate 16 cells of 1024×1024 together" in message
    assert "use batch_size=4 or fewer" in message


def test_a_studys_batch_size_is_refused_before_the_queue(hosted):
    study = ('name = "big batch"\nbatch_size = 16\nseeds = [' + ", ".join(map(str, range(8))) + ']\n'
             '[axes]\nalpha = [0.0, 0.5]\n[base]\nprompt = "a pond"\nheight = 1024\nwidth = 1024\n'
             'num_inference_steps = 2\n')
    message = _message(lambda: hosted["client"].predict(
        study, [handle_file(str(hosted["root"] / "ref.png"))], api_name="/run_study_text"))
    assert "batch_size=16: this study would generate 16 cells of 1024×1024 together" in message


# ---- F4b: an upload request's files together ----------------------------------------------------------
def _uploaded(names: list[str]) -> list[Path]:
    from gradio.utils import get_upload_folder

    return [p for p in Path(get_upload_folder()).rglob("*") if p.name in names]


def _files(count: int, tag: str) -> list[tuple[str, bytes]]:
    return [(f"{tag}-{i}.png", os.urandom(900 * 1024)) for i in range(count)]  # each under gradio's 1 MB cap


def test_one_upload_request_with_many_files_is_refused_before_any_is_written(hosted):
    tag = f"many-{uuid.uuid4().hex}"
    files = _files(12, tag)  # 10.8 MB in one request: 12 files, each within the per-file cap
    reply = httpx.post(hosted["url"] + "gradio_api/upload", timeout=60,
                       files=[("files", (name, data, "image/png")) for name, data in files])
    assert reply.status_code == 413, reply.text
    detail = reply.json()["detail"]
    assert detail.startswith("upload request: ") and f"budget of {UPLOAD_BUDGET:,} bytes per upload request" in detail
    assert "upload fewer or smaller files in one request" in detail
    assert _uploaded([name for name, _ in files]) == []  # nothing reached gradio's upload folder
    # the most references one generation takes, in one request, still upload
    legit = _files(MAX_REFERENCES, f"legit-{uuid.uuid4().hex}")
    reply = httpx.post(hosted["url"] + "gradio_api/upload", timeout=60,
                       files=[("files", (name, data, "image/png")) for name, data in legit])
    assert reply.status_code == 200 and len(reply.json()) == MAX_REFERENCES, reply.text


def test_an_upload_without_a_declared_length_is_counted_as_it_streams(hosted):
    tag = f"chunked-{uuid.uuid4().hex}"
    files = _files(12, tag)
    boundary = uuid.uuid4().hex

    def body():  # chunked transfer encoding: no Content-Length to refuse up front
        for name, data in files:
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                   f"Content-Type: image/png\r\n\r\n").encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    reply = httpx.post(hosted["url"] + "gradio_api/upload", content=body(), timeout=60,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status_code == 413, reply.text
    assert f"budget of {UPLOAD_BUDGET:,} bytes per upload request" in reply.json()["detail"]
    assert _uploaded([name for name, _ in files]) == []


def test_one_address_cannot_fill_the_upload_cache_with_many_requests(hosted):
    """gradio keeps every upload a day: 4 requests of 8 files put 336 MB on disk in 1.9 s. One
    address may have 2 full upload requests' worth in the cache; then 413, naming the budget and
    the wait; another address is not held up. Counted before gradio writes a byte."""
    from llm_dit.serving.budgets import CLIENT_UPLOADS

    def upload(address, tag):
        return httpx.post(hosted["url"] + "gradio_api/upload", timeout=60, headers={"X-Forwarded-For": address},
                          files=[("files", (n, d, "image/png")) for n, d in _files(MAX_REFERENCES, tag)])

    greedy, other = f"203.0.113.{uuid.uuid4().int % 250}", "198.51.100.77"
    assert CLIENT_UPLOADS == 2
    for _ in range(CLIENT_UPLOADS):
        assert upload(greedy, uuid.uuid4().hex).status_code == 200
    tag = f"over-{uuid.uuid4().hex}"
    refused = upload(greedy, tag)
    assert refused.status_code == 413, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("uploads: your address has sent") and "reuse the files you uploaded" in detail
    assert f"budget is {CLIENT_UPLOADS * UPLOAD_BUDGET / 2**20:,.0f} MB per client" in detail
    assert _uploaded([f"{tag}-{i}.png" for i in range(MAX_REFERENCES)]) == []
    assert upload(other, uuid.uuid4().hex).status_code == 200


def test_the_upload_ledger_forgets_what_the_cache_has_deleted():
    import time

    from ui.limits import UploadLedger

    ledger = UploadLedger(limit=100, window_s=0.2)
    assert ledger.take("a", 60) is None and ledger.take("b", 60) is None
    assert "your address has sent" in ledger.take("a", 60)
    time.sleep(0.25)  # the cache has deleted those uploads by now: the address may send again
    assert ledger.take("a", 60) is None


# ---- --output-keep over the study folders -------------------------------------------------------------
def test_pruning_removes_whole_finished_study_folders_oldest_first_never_a_running_one(tmp_path):
    studies = tmp_path / "studies"
    running = _study_folder(studies, "20240101-000000-study-aaaaaa", "running", 5, 1_700_000_000)
    oldest = _study_folder(studies, "20240101-000001-compare-bbbbbb", "finished", 5, 1_700_000_100)
    newer = _study_folder(studies, "20240101-000002-study-cccccc", "incomplete", 5, 1_700_000_200)
    mine = _study_folder(studies, "my-own-study", "finished", 5, 1_600_000_000)  # the operator's: never touched
    outputs = OutputFolder(tmp_path, keep=12)
    png = outputs.write("20240101-000003-txt2img-7.png", lambda tmp: Path(tmp).write_bytes(b"png"))
    # 5 + 5 + 5 + 1 = 16 files over a keep of 12: the oldest finished study goes, whole
    assert not oldest.exists()
    assert running.is_dir() and newer.is_dir() and mine.is_dir() and png.is_file()
    # one more write: 12 files; still within the keep
    outputs.write("20240101-000004-txt2img-8.png", lambda tmp: Path(tmp).write_bytes(b"png"))
    assert newer.is_dir()
    # a keep of 3: every finished study goes (then the oldest PNGs), the running one stays
    assert [p.name for p in OutputFolder(tmp_path, keep=3).prune()][0] == newer.name
    assert running.is_dir() and not newer.exists() and mine.is_dir()


def test_a_hosted_sweep_prunes_finished_studies_over_the_keep(hosted):
    assert (hosted["studies"] / OLD_FINISHED).is_dir()
    progress, *_ = hosted["client"].predict(
        references=[handle_file(str(hosted["root"] / "ref.png"))], x_axis="seed", x_values="1, 2", cell_limit=2,
        prompt="a pond", height=64, width=64, num_inference_steps=2, api_name="/compare")
    assert "2 / 2 cells" in progress
    assert not (hosted["studies"] / OLD_FINISHED).exists()  # 30 files of a finished sweep over a keep of 20
    assert (hosted["studies"] / OLD_RUNNING).is_dir()  # a running study is never pruned
    new = [p for p in hosted["studies"].iterdir() if "-compare-" in p.name]
    assert len(new) == 1 and json.loads((new[0] / "study.json").read_text())["status"] == "finished"


def test_stored_references_go_when_no_study_names_them(tmp_path):
    """Stored uploads (studies/references/<sha>-<random>/) were never pruned: one client could store
    3.2 GB a study for good. Once no study.json names one, and it is ORPHAN_AGE_S old, it goes."""
    from llm_dit.serving.outputs import ORPHAN_AGE_S

    studies = tmp_path / "studies"
    store = studies / "references"
    named, orphan, fresh = (store / f"{'ab' * 16}-{n}" for n in ("1111111111111111", "2222222222222222",
                                                                  "3333333333333333"))
    for folder in (named, orphan, fresh):
        folder.mkdir(parents=True)
        (folder / "ref.png").write_bytes(b"png")
    study = _study_folder(studies, "20240101-000000-study-aaaaaa", "finished", 1, 1_700_000_000)
    (study / "study.json").write_text(json.dumps({"status": "finished", "study": {"references": [
        {"name": "ref.png", "path": str(named / "ref.png"), "sha256": "ab" * 32}]}}))
    old = os.stat(fresh).st_mtime - ORPHAN_AGE_S - 60
    for folder in (named, orphan):
        os.utime(folder, (old, old))
    gone = OutputFolder(tmp_path, keep=100).prune()
    assert gone == [orphan]
    assert named.is_dir() and fresh.is_dir() and study.is_dir()  # named by a study / maybe a run starting

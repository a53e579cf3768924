"""Disks as they really fail: a folder outside the working and temp folders, a read-only folder,
a full filesystem (size-limited tmpfs mounts, made and removed by the test), and retention."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from PIL import Image

from llm_dit.runtime.models import ModelManager
from llm_dit.serving.outputs import OutputFolder
from llm_dit.runtime.settings import Settings
from ui import build_demo, launch_options


@contextmanager
def tmpfs(size: str, read_only: bool = False, fill_to_bytes_free: int | None = None):
    """A fresh tmpfs outside the working and temp folders (needs root, as CI and this machine run)."""
    where = Path("/mnt") / f"llm-dit-test-{uuid.uuid4().hex[:8]}"
    where.mkdir(parents=True)
    options = f"size={size},mode=755"
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    except FileNotFoundError:
        done = None
    if done is None or done.returncode != 0:
        where.rmdir()
        pytest.skip("mounting a tmpfs needs root (mount -t tmpfs); this run cannot")
    try:
        if fill_to_bytes_free is not None:
            free = os.statvfs(where).f_bavail * os.statvfs(where).f_frsize
            with open(where / "filler", "wb") as f:
                f.write(b"\0" * max(0, free - fill_to_bytes_free))
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


@contextmanager
def served(settings):
    demo = build_demo(settings, ModelManager(settings))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    try:
        yield url, Client(url, verbose=False)
    finally:
        demo.close()


def _small(client, **kw):
    return client.predict(**{"prompt": "a boat", "height": 64, "width": 64, "seed": 4, **kw}, api_name="/txt2img")


def _settings(tiny_cache, folder, **kw):
    return Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(folder), **kw)


def test_an_output_folder_outside_the_working_and_temp_folders_is_served(tiny_cache):
    with tmpfs("16m") as folder, served(_settings(tiny_cache, folder / "outputs")) as (url, client):
        path, _, meta = _small(client)
        assert Image.open(path).size == (64, 64) and "save_error" not in meta
        assert len(list((folder / "outputs").glob("*.png"))) == 1


def test_a_read_only_output_folder_starts_and_still_returns_images(tiny_cache):
    with tmpfs("1m", read_only=True) as folder, served(_settings(tiny_cache, folder)) as (url, client):
        assert httpx.get(url, timeout=30).status_code == 200  # the app started (examples live elsewhere)
        path, _, meta = _small(client)
        assert Image.open(path).size == (64, 64)  # the image still reaches the client
        assert meta["saved"] is False
        assert f"in the output folder {folder} (Read-only file system)" in meta["save_error"]
        assert "point --output-dir at another folder" in meta["save_error"]
        assert _small(client, seed=5)[2]["seed"] == 5  # the app keeps serving


def test_a_full_disk_leaves_no_partial_file(tiny_cache):
    with tmpfs("256k", fill_to_bytes_free=4096) as folder, served(_settings(tiny_cache, folder)) as (url, client):
        path, _, meta = _small(client)
        assert Image.open(path).size == (64, 64) and meta["saved"] is False
        assert "No space left on device" in meta["save_error"]
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]  # no 0-byte PNG, no temp file


def _aged(path, age):
    os.utime(path, (1000 + age, 1000 + age))  # distinct ages, even on coarse clocks
    return path


def test_retention_keeps_the_newest(tmp_path):
    out = OutputFolder(tmp_path, keep=3)
    for i in range(5):
        name = f"20261201-12000{i}-txt2img-{i}.png"
        out.write(name, lambda tmp, i=i: Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp, format="PNG"))
        _aged(tmp_path / name, i)
    out.prune()
    assert sorted(p.name[-5:] for p in tmp_path.glob("*.png")) == ["2.png", "3.png", "4.png"]


def test_retention_counts_every_file_the_app_writes_and_nothing_else(tmp_path):
    """Exports, tables and a sweep's cells count, each file (repeated exports or sweeps on a Space
    must not fill the disk); an operator's own files never do, even named like the app's, and a
    sweep still being written is kept whole."""
    out = OutputFolder(tmp_path, keep=4)
    (tmp_path / "my-folder").mkdir()
    for name in ("notes.txt", "photo.png", "20200101-000000-operator.txt", "20200101-000000-vl-notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    mine = [_aged(tmp_path / name, 0) for name in ("notes.txt", "photo.png", "my-folder",
                                                    "20200101-000000-operator.txt", "20200101-000000-vl-notes.txt")]
    exports = ["20261201-120000-vl-conditioning.safetensors", "20261201-120001-vl-layer-scan.csv",
               "20261201-120002-txt2img-prompt-embeds.safetensors"]
    for i, name in enumerate(exports):
        (tmp_path / name).write_bytes(b"x")
        _aged(tmp_path / name, 10 + i)
    cells = tmp_path / "20261201-120003-compare-abc123-cells"
    cells.mkdir()
    for i in range(3):
        (cells / f"cell00{i}.png").write_bytes(b"x")
    _aged(cells, 20)
    sweep = [tmp_path / f"20261201-115959-compare-0a0a0a{s}" for s in (".csv", "-grid0.png")]
    for path in sweep:
        path.write_bytes(b"x")
        _aged(path, 5)  # the oldest of the app's entries, but still being written

    # 3 exports + 3 cells + 2 of the sweep = 8 files: the 3 exports go, then the cell folder (3 files)
    # would have to go to reach 4, since the protected sweep cannot
    deleted = out.prune(protect="20261201-115959-compare-0a0a0a")
    assert [p.name for p in deleted] == exports + [cells.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in mine] + [p.name for p in sweep])
    assert out.prune() == []  # 2 files of the app's left: within 4
    assert all(p.exists() for p in mine + sweep)


def test_hosted_retention_takes_only_names_with_the_random_part(tmp_path):
    out = OutputFolder(tmp_path, keep=1, unguessable=True)
    (tmp_path / "20261201-120000-txt2img-5.png").write_bytes(b"x")  # made by a local run, say
    first = out.write("20261201-120001-txt2img-5.png", lambda tmp: Path(tmp).write_bytes(b"x"))
    _aged(first, 1)
    second = out.write("20261201-120002-txt2img-5.png", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert re.fullmatch(r"20261201-120002-txt2img-5-[0-9a-f]{16}\.png", second.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["20261201-120000-txt2img-5.png", second.name])


def test_retention_through_the_app(tiny_cache, tmp_path):
    with served(_settings(tiny_cache, tmp_path, output_keep=2)) as (_, client):
        for seed in (1, 2, 3):
            _small(client, seed=seed)
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_hosted_apps_keep_a_bounded_number_of_pngs_by_default(tmp_path):
    from llm_dit.serving.policy import from_settings

    assert from_settings(Settings(hosting="hosted", output_dir=str(tmp_path))).output_keep == 500
    assert from_settings(Settings(hosting="local", output_dir=str(tmp_path))).output_keep == 0

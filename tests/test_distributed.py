"""A sweep over 2 CPU processes (accelerate launch, gloo) equals the single-process sweep."""

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from llm_dit.studies.distributed import launch_command

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"batch_seconds", "seconds_per_cell", "extract_seconds"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep(processes: int, settings, reference: Path, out: Path, seed: int) -> dict:
    args = ["sweep", "--reference", str(reference), "--prompt", "a harbour", "--height", "64", "--width", "64",
            "--seed", str(seed), "--x-axis", "alpha", "--x-values", "0.2, 0.5, 0.8", "--y-axis", "blend_mode",
            "--y-values", "linear, adain", "--name", "grid", "--tiny", "--cache-dir", settings.cache_dir,
            "--output-dir", str(out)]
    # One thread per process in both runs: float sums then happen in the same order (accelerate gives
    # each of several processes one thread; a lone process would otherwise use every core).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(launch_command(processes, _free_port()) + args, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _relative(paths, root: Path) -> list[str]:
    return sorted(str(Path(p).relative_to(root)) for p in paths)


def test_two_processes_give_the_single_process_sweep(settings, tmp_path):
    reference = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (180, 40, 90)).save(reference)
    two = _sweep(2, settings, reference, tmp_path / "two", seed=-1)
    one = _sweep(1, settings, reference, tmp_path / "one", seed=two["seed"])
    assert two["counts"]["processes"] == 2 and two["counts"]["finished"] == 6
    assert [c["extractions_run"] for c in two["counts"]["per_process"]] == [1, 1]  # shared within a process
    assert [(c["cells"], c["finished"]) for c in two["counts"]["per_process"]] == [(3, 3), (3, 3)]  # each its own
    # The same files under the same names...
    for key in ("grids", "cells"):
        assert _relative(two[key], tmp_path / "two") == _relative(one[key], tmp_path / "one")
    # ...with bit-identical cells and grid, and the same table (timings aside).
    for a, b in zip(sorted(one["cells"]) + one["grids"], sorted(two["cells"]) + two["grids"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), b
    rows = [[{k: v for k, v in row.items() if k not in TIMING} for row in json.loads(Path(r["json"]).read_text())["cells"]]
            for r in (one, two)]
    assert rows[0] == rows[1] and len(rows[0]) == 6
    assert {row["seed"] for row in rows[1]} == {two["seed"]}  # a drawn seed is drawn once, for every process

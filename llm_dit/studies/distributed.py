"""Studies and sweeps split over several processes (one per GPU) with accelerate.

`accelerate launch --num_processes N -m llm_dit sweep|study ...` starts N copies of the command
line. Each process loads its own models on its own device (accelerate makes `cuda` mean this
process's GPU), takes a contiguous share of the unfinished cells
(`PartialState.split_between_processes`), shares extractions and prompt encodings among its cells
through its manager's caches, and appends its own rows to the study folder; the main process then
merges them and writes the grids and tables under the names a single-process run uses. A cell
depends only on its own request and seed, so with batch_size 1 each cell is bit-identical to the
single-process run on the CPU (GPU kernels may differ in the last bits). Without `accelerate launch` this is the plain one-process
sweep. ZeroGPU Spaces stay single-process: each call there gets one GPU in a forked worker.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from ..core.request import VLRequest
from .compare import SweepSpec, close_sweep, sweep_study
from .runner import read_info


def _uses_gpu(settings) -> bool:
    import torch

    devices = (settings.text_encoder_device, settings.transformer_device, settings.vae_device, settings.vl_device)
    return torch.cuda.is_available() and any(d in ("auto", "cuda") for d in devices)


@contextmanager
def _launch(settings):
    """accelerate's state for this launch; its process group is torn down when the work ends.
    A process left to exit with gloo's threads still alive aborts ("terminate called without an
    active exception", SIGABRT), which fails the whole launch after every cell was saved."""
    from accelerate import PartialState

    # Processes without a GPU talk over gloo (accelerate's MULTI_CPU); with one, over nccl.
    state = PartialState(cpu=not _uses_gpu(settings))
    try:
        yield state
    finally:
        if state.num_processes > 1:
            state.destroy_process_group()


def sweep(manager, spec: SweepSpec, base: VLRequest, references: list, structure_image, folder: str) -> dict | None:
    """Run the sweep as a study in `folder`, its cells split over every process of the launch; the
    main process finishes the folder and returns its files and counts (other processes return None)."""
    from accelerate.utils import broadcast_object_list

    with _launch(manager.settings) as state:
        where = [str(folder)]  # the main process's name (a default name has the time in it)
        if state.num_processes > 1:
            broadcast_object_list(where)
        folder = where[0]
        study, problem = None, None
        if state.is_main_process:  # one study (its drawn seed) for every process: the main process's
            try:
                if Path(folder).exists():  # never a new table over old cells: a sweep's files are all its own
                    raise ValueError(f"--name: {folder} exists: choose another name, or `llm-dit study resume "
                                     f"{folder}` to finish that sweep.")
                study = sweep_study(manager, spec, base, references, Path(folder).parent / "references",
                                    structure_image)
            except ValueError as err:  # every process stops with it (none waits for the others forever)
                problem = str(err)
        if _study(state, manager, folder, study, problem) is None:
            return None
    result = close_sweep(folder, spec, read_info(folder)["runs"][-1]["per_process"], finished=True)
    return {**result.outputs, "counts": result.counts, "caption": result.caption,
            "seed": result.cells[0].row["seed"] if result.cells else None}


def launch_command(num_processes: int, port: int = 29500) -> list[str]:
    """`accelerate launch -m llm_dit` for `num_processes` processes on this machine (append the
    sweep's arguments). Several processes use every GPU accelerate sees, or gloo on the CPU."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(port)]
    return command + ["-m", "llm_dit"]


def study(manager, folder: str, study=None) -> dict | None:
    """Run a study (`study` given: a new folder) or resume the one in `folder`, its unfinished
    cells split over every process of the launch; each process appends its own rows, the main
    process merges them and writes the tables, grids and plots (others return None)."""
    with _launch(manager.settings) as state:
        return _study(state, manager, folder, study)


def _study(state, manager, folder, study, problem: str | None = None):
    from accelerate.utils import broadcast_object_list, gather_object

    from .runner import create, finish, load_folder_study, rows, run_cells

    with state.main_process_first():  # checkpoints that are built (tiny) or fetched on first use: once
        manager.zimage_source, manager.vl_source
    error = [problem if state.is_main_process else None]
    if state.is_main_process and study is not None and problem is None:
        try:  # the main process's study (its drawn seeds) is the one every process runs
            create(manager, study, folder)
        except ValueError as err:
            error = [str(err)]
    if state.num_processes > 1:
        broadcast_object_list(error)
    if error[0]:
        raise ValueError(error[0])
    study = load_folder_study(folder)
    # what is left, read once by the main process before anyone writes a row, and shared
    done = rows(folder) if state.is_main_process else {}
    todo = [[c.index for c in study.cells() if c.index not in done] if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(todo)
    with state.split_between_processes(todo[0]) as share:
        mine = set(share)
    counts = None
    with tqdm(total=len(mine), desc=f"study (process {state.process_index + 1}/{state.num_processes})",
              unit="cell", position=state.process_index) as bar:
        run = run_cells(manager, study, folder, only=mine, process=state.process_index)
        while True:
            try:
                next(run)
            except StopIteration as stop:
                counts = stop.value
                break
            bar.update(1)
    counts = gather_object([counts]) if state.num_processes > 1 else [counts]
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return finish(folder, study, {"processes": state.num_processes, "per_process": counts})

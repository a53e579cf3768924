"""Sweeps split over several processes (one per GPU) with accelerate, gathered on the main process.

`accelerate launch --num_processes N -m llm_dit sweep ...` starts N copies of the command line.
Each process loads its own models on its own device (accelerate makes `cuda` mean this process's
GPU), takes a contiguous share of the cells (`PartialState.split_between_processes`), and shares
extractions and prompt encodings among its cells through its manager's caches. The main process
then gathers every finished cell and writes one labelled grid per Z value, one table and the cell
PNGs under the same names a single-process run uses. A cell depends only on its own request and
seed, so with batch_size 1 each cell is bit-identical to the single-process run on the CPU (GPU
kernels may differ in the last bits). Without `accelerate launch` this is the plain one-process
sweep. ZeroGPU Spaces stay single-process: each call there gets one GPU in a forked worker.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from tqdm.auto import tqdm

from .compare import SweepResult, SweepSpec, iter_sweep, plan, save_outputs
from ..pipelines.generate import resolve_seed
from ..core.request import VLRequest, validate

COUNTED = ("extractions_run", "encodes_run", "vl_loads", "load_seconds")  # summed over the processes


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


def sweep(manager, spec: SweepSpec, base: VLRequest, references: list, structure_image, output_dir: str,
          stem: str) -> dict | None:
    """Run the sweep over every process of the launch; the main process saves the outputs and
    returns their summary (other processes return None)."""
    with _launch(manager.settings) as state:
        return _sweep(state, manager, spec, base, references, structure_image, output_dir, stem)


def _sweep(state, manager, spec, base, references, structure_image, output_dir, stem):
    from accelerate.utils import broadcast_object_list, gather_object

    # One seed for every process: a drawn seed (-1) is drawn once, on the main process.
    with state.main_process_first():  # checkpoints that are built (tiny) or fetched on first use: once
        manager.zimage_source, manager.vl_source
    base = [resolve_seed(validate(base, img2img=base.strength < 1.0, policy=manager.policy))
            if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(base)
    base = base[0]
    axes, cells = plan(spec, base)
    with state.split_between_processes(list(range(len(cells)))) as share:
        mine = set(share)
    result = None
    with tqdm(total=len(mine), desc=f"sweep (process {state.process_index + 1}/{state.num_processes})",
              unit="cell", position=state.process_index) as bar:
        for result in iter_sweep(manager, spec, base, references, structure_image, only=mine):
            bar.update(len(result.finished()) - bar.n)
    # each process reports its own share: the cells it was given, and what it ran for them
    finished, counts, caption = result.finished(), [{**result.counts, "cells": len(mine)}], result.caption
    if state.num_processes > 1:
        finished, counts = gather_object(finished), gather_object(counts)
        caption = next((c for c in gather_object([caption]) if c), None)
    if not state.is_main_process:
        return None
    by_index = {c.index: c for c in finished}
    for cell in cells:  # the main process's cell list, filled with every process's results
        if cell.index in by_index:
            cell.result, cell.metrics = by_index[cell.index].result, by_index[cell.index].metrics
    total = {"cells": len(cells), "finished": len(by_index), "processes": state.num_processes,
             "batch_size": spec.batch_size, **{k: sum(c[k] for c in counts) for k in COUNTED}}
    total.update(counts[0] if state.num_processes == 1 else {"per_process": counts})
    gathered = SweepResult(axes, cells, total, caption, diff_base=int(spec.diff_base))
    outputs = save_outputs(gathered, output_dir, stem)
    return {**outputs, "counts": total, "caption": caption, "seed": base.seed}


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


def _study(state, manager, folder, study):
    from accelerate.utils import broadcast_object_list, gather_object

    from .runner import create, finish, load_folder_study, rows, run_cells

    with state.main_process_first():  # checkpoints that are built (tiny) or fetched on first use: once
        manager.zimage_source, manager.vl_source
    error = [None]
    if state.is_main_process and study is not None:
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

"""Blend comparison tab: sweeps over the VL tab's settings -> labelled grids, cells and a table.

Each sweep is a study (`llm_dit.studies.compare`) written to `<output dir>/studies/<name>/`: it
appears in the Studies tab, where it can be opened, resumed after a stop, and re-run."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr
from PIL import Image

from llm_dit.core.request import CONTROL_FIELDS, VLRequest, validate
from llm_dit.serving.outputs import STUDIES
from llm_dit.studies.compare import (AXES, EXAMPLE_VALUES, SweepResult, SweepSpec, close_sweep, iter_sweep, load_sweeps,
                                     sweep_cells, to_study)
from llm_dit.studies.runner import cell_name, read_info
from llm_dit.studies.study import Reference, Study

from ..common import Endpoint
from ..guard import message_box
from ..fields import FieldDropdown, FieldNumber, FieldSlider
from ..gpu import gpu_seconds, on_gpu
from ..owners import OWNERS
from ..stops import CLICK_TIME_JS, Stops
from ..studio import GPU
from .vl import check as check_vl

FIELDS = [f.name for f in fields(VLRequest) if f.name not in CONTROL_FIELDS]
SPEC = ["x_axis", "x_values", "y_axis", "y_values", "z_axis", "z_values", "cell_limit", "batch_size", "diff_base"]
DEFAULTS = SweepSpec()
GRID_HEIGHT = 640  # px: a whole grid and its caption beside the controls on a 1000 px tall window
CELLS_HEIGHT = 300  # px: two rows of cell thumbnails, then the gallery scrolls


def _spec(values: dict) -> SweepSpec:
    return SweepSpec(**{k: (getattr(DEFAULTS, k) if values[k] is None else values[k]) for k in SPEC})


STOPS = Stops()  # per browser session: "stop after this cell"


def _cells(request, spec: dict) -> list:
    """The sweep's cells (their requests), before any reference is stored."""
    return to_study(_spec(spec), request, [Reference("check", "", "")]).cells()


def check(request, references, structure_image, policy, **spec) -> None:
    """Before the queue: the base request, the references and the sweep's cells."""
    check_vl(request, references, policy, structure_image)
    cells = _cells(request, spec)
    policy.budgets.check_cells(len(cells), "sweep")  # before checking each of them
    for cell in cells:
        validate(cell.request, img2img=cell.request.strength < 1.0, policy=policy)
    # the cells' work together, and the output pixels of one batch of them
    policy.budgets.check_sweep([cell.request for cell in cells], _spec(spec).batch_size, "sweep")


VALUES_INFO = "comma-separated (vl_text: |-separated; prompt: one per line or |-separated)"


def build(studio, vl_tab) -> None:
    manager, output_dir = studio.manager, studio.outputs
    root = studio.outputs.path / STUDIES  # where the Studies tab lists them (resolved once, at start)
    presets = load_sweeps()

    def sweep(request, references, structure_image, folder: str, session: str, **spec):
        """The GPU side: runs the sweep into its study folder; yields only what is new (finished
        cells' rows, their images are in the folder), then the folder's files."""
        sent = set()
        for result in iter_sweep(manager, _spec(spec), request, references or [], folder, structure_image,
                                 session=session):
            new = [(c.index, c.row) for c in result.cells if c.index not in sent]
            sent.update(i for i, _ in new)
            yield new, result.counts, result.caption, result.outputs

    def seconds(request, references, structure_image, folder: str, session: str, **spec):
        try:
            cells = _cells(request, spec)
        except ValueError:  # a bad spec fails fast anyway
            return gpu_seconds(request)
        extracting = {(c.request.vl_hidden_layer, c.request.vl_text_hidden_layer, c.request.token_mode,
                       c.request.vl_think_block, c.request.vl_text, c.request.vl_composition) for c in cells}
        return gpu_seconds(request, cells=len(cells), extractions=2 * len(extracting) * max(1, len(references or [])))

    gpu_sweep = on_gpu(sweep, duration=seconds)

    with gr.Tab("Blend comparison", id="compare", elem_id="compare"):
        gr.Markdown("Sweeps run over the **VL conditioning** tab's settings and references: everything not "
                    "on an axis is taken from there. One seed for all cells unless `seed` is an axis.")
        with gr.Row():
            with gr.Column(scale=1):
                preset = gr.Dropdown(choices=list(presets), value=None, label="Sweep preset (presets/studies/)")
                note = gr.Markdown()
                axes = list(AXES)
                c = {}
                for name, label, none in (("x", "X axis", False), ("y", "Y axis", True),
                                          ("z", "Z axis (one grid each)", True)):
                    with gr.Row(equal_height=True):  # an axis beside its values: the three fit one screen
                        choices = ([("(none)", "")] if none else []) + axes
                        c[f"{name}_axis"] = FieldDropdown(choices=choices, value=getattr(DEFAULTS, f"{name}_axis"),
                                                          label=label, min_width=160)
                        c[f"{name}_values"] = gr.Textbox(value=getattr(DEFAULTS, f"{name}_values"),
                                                         label=f"{name.upper()} values", scale=2,
                                                         info=VALUES_INFO if name == "x" else None)
                with gr.Accordion("Cell limit, batching, difference maps", open=False):
                    c["cell_limit"] = FieldNumber(value=DEFAULTS.cell_limit, precision=0, label="Cell limit")
                    c["batch_size"] = FieldSlider(1, 16, value=DEFAULTS.batch_size, step=1, label="Batch size",
                                                  info="cells per pipeline call, where they can share one")
                    c["diff_base"] = FieldNumber(value=DEFAULTS.diff_base, precision=0,
                                                 label="Difference maps against cell",
                                                 info="a cell number from the table (-1: none)")
            with gr.Column(scale=2):
                with gr.Row():  # the run bar on top, as in the generating tabs: in view beside the grid
                    go = gr.Button("Run sweep", variant="primary", elem_id="compare-run")
                    stop = gr.Button("Stop after this cell", variant="stop", elem_id="compare-stop")
                    click_time = gr.Number(visible=False)  # the page's clock, for Run and Stop (ui/stops.py)
                message = message_box("compare-refusal")
                progress = gr.Markdown(elem_id="compare-progress")
                # A grid is seen whole: shown large ("preview"), fitted inside the box ("contain"),
                # with its axes as the caption; further grids (Z values, difference maps) below it.
                grids = gr.Gallery(label="Grids", format="png", elem_id="compare-grids", preview=True,
                                   object_fit="contain", height=GRID_HEIGHT, columns=4, fit_columns=False)
        # the table and the cells get the page's full width: a column per metric, a row of thumbnails
        table = gr.Dataframe(label="Cells (click a header to sort)", wrap=True, datatype="auto",
                             elem_id="compare-table")
        cells = gr.Gallery(label="Cells (each PNG carries its full metadata)", columns=9, format="png",
                           object_fit="contain", fit_columns=False, height=CELLS_HEIGHT, elem_id="compare-cells")
        with gr.Row():
            files = gr.File(label="Downloads: grids, cell PNGs, table (CSV, JSON)", file_count="multiple")
            counts = gr.JSON(label="This sweep's counts: extractions, encodes and VL loads it ran vs distinct keys",
                             elem_id="compare-counts")

        def action(request, references, structure_image, session=None, **spec):
            session_hash = getattr(session, "session_hash", None)
            clicked = STOPS.started(session_hash)
            output_dir.prune()  # finished studies over --output-keep go before this one adds its cells
            folder = root / output_dir.stem("compare")
            chosen = _spec(spec)
            found, images, study = {}, {}, None
            chunks = gpu_sweep(request, references, structure_image, str(folder), OWNERS.owner(session), **spec)
            for new, counts, caption, outputs in chunks:
                study = study or Study.from_dict(read_info(folder)["study"])
                for index, row in new:
                    found[index] = row
                    images[index] = Image.open(folder / cell_name(index)).convert("RGB")
                stopping = not outputs and STOPS.stopped(session_hash, clicked)  # read once: page and run agree
                if stopping:  # stop after the cell that just finished; keep everything so far, resumable
                    chunks.close()
                    result = close_sweep(folder, chosen, [{"process": 0, "cells": counts["cells"], "finished": len(found),
                                                           "load_seconds": {}, "stopped": True}],
                                         images=images, stopped=True)
                    outputs = result.outputs
                else:
                    result = SweepResult(chosen.axes(), sweep_cells(study, chosen, found, images), counts, caption,
                                         diff_base=int(chosen.diff_base))
                # The grids are drawn once, after the last cell (or a stop): while it runs, the page
                # shows the cells' thumbnails and the table, and nothing grows with the cells squared.
                text = (f"**{len(found)} / {counts['cells']} cells**" + (" — stopped" if stopping else "") +
                        f" · study `{folder.name}` (Studies tab: open, resume, re-run)")
                if caption:
                    text += f"\n\nText-route caption: _{caption[:300]}_"
                rows = result.rows()
                captions = result.captions() + result.captions(diff=True)
                # The grids arrive once, with the last value (what an API client gets back);
                # `open_grid` below then shows the first one large.
                shown = list(zip(outputs["grids"], captions)) if outputs else gr.skip()
                files = outputs["grids"] + [outputs["csv"], outputs["json"]] + outputs["cells"] if outputs else gr.skip()
                yield (text, shown,
                       {"headers": list(rows[0]), "data": [list(r.values()) for r in rows]} if rows else None,
                       [(str(folder / cell_name(c.index)), f"cell {c.index}") for c in result.cells], files,
                       result.counts)
                if stopping:
                    break

        def open_grid():
            """After a sweep, show its first grid large, whichever of its updates reached the page."""
            return gr.Gallery(selected_index=0)

        def request_stop(clicked_at, session: gr.Request):
            STOPS.stop_clicked(session.session_hash, clicked_at)

        def arm_stop(clicked_at, session: gr.Request):
            """Run's click time: a Stop clicked after it stops this sweep after its current cell."""
            STOPS.run_clicked(session.session_hash, clicked_at)

        for axis in ("x", "y", "z"):  # choosing an axis fills in example values for it
            c[f"{axis}_axis"].input(lambda name: EXAMPLE_VALUES.get(name, ""), c[f"{axis}_axis"], c[f"{axis}_values"],
                                    api_visibility="private", queue=False)
        inputs = [vl_tab.inputs["references"], vl_tab.inputs["structure_image"]] + [c[k] for k in SPEC]
        endpoint = Endpoint(studio, "compare", FIELDS, action, ("references", "structure_image", *SPEC), VLRequest,
                            stream=True, with_session=True, outputs=6, sized=True,
                            check=lambda request, references, structure_image, **spec: check(
                                request, references, structure_image, studio.policy, **spec))
        # Run's click time is noted before the sweep is queued, so the sweep always reads its own
        arm = go.click(arm_stop, click_time, None, js=CLICK_TIME_JS, api_visibility="private", queue=False)
        sweep = studio.guards.run(endpoint, arm, inputs + [vl_tab.controls[f] for f in FIELDS],
                                  [progress, grids, table, cells, files, counts], message, api_name="compare",
                                  concurrency_id=GPU)
        sweep.success(open_grid, None, grids, api_visibility="private", queue=False)
        stop.click(request_stop, click_time, None, js=CLICK_TIME_JS, api_visibility="private", queue=False)

        def apply(name):
            if name not in presets:
                return [gr.skip()] * (len(SPEC) + 1 + len(FIELDS))
            p = presets[name]
            spec = {**{k: "" for k in ("y_axis", "y_values", "z_axis", "z_values")}, **p["spec"]}
            return [p["description"]] + [spec.get(k, gr.skip()) for k in SPEC] + [
                p["base"].get(f, gr.skip()) for f in FIELDS]

        preset.change(apply, preset, [note] + [c[k] for k in SPEC] + [vl_tab.controls[f] for f in FIELDS],
                      api_visibility="private", queue=False)

"""Studies tab: the study folders under `<output dir>/studies/` — list, open (grids, summary table,
plots), resume an unfinished one. Hosted, a visitor sees only the studies their own session started."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from llm_dit.studies.runner import cell_name, list_studies, load_folder_study, read_info, resume
from llm_dit.studies.summary import figure, numeric_axes, read_summary

from ..gpu import gpu_seconds, on_gpu
from ..studio import GPU

COLUMNS = ["name", "started", "status", "cells", "size_mb"]
THUMBNAILS = 8  # while a study resumes: its newest cells, small (the grids are drawn once, at the end)


def build(studio) -> None:
    manager = studio.manager
    root = Path(studio.settings.output_dir) / "studies"

    def visible(session) -> dict[str, dict]:
        """The studies this visitor may see, by name (hosted: their own session's only)."""
        hash_ = getattr(session, "session_hash", None) or ""
        return {s["name"]: s for s in list_studies(root, hash_ if studio.hosted else None)}

    def folder_of(name, session) -> Path:
        if name not in visible(session):
            raise gr.Error(f"study={name!r} is not one of the studies listed here: click Refresh and choose one.")
        return root / name

    def show_studies(session: gr.Request):
        studies = visible(session)
        rows = [[s[c] for c in COLUMNS] for s in studies.values()]
        return {"headers": COLUMNS, "data": rows}, gr.Dropdown(choices=list(studies), value=None)

    def open_study(name, session: gr.Request):
        folder = folder_of(name, session)
        info = read_info(folder)
        grids = sorted(str(p) for p in (folder / "grids").glob("*.png"))
        files = [str(folder / n) for n in ("metadata.jsonl", "summary.csv", "study.json") if (folder / n).is_file()]
        text = (f"**{name}** · {info.get('status')} · {info.get('finished_cells', 0)} / {info.get('cells')} cells · "
                f"started {info.get('started')} · z_image {info['models']['z_image']['id']}")
        if not (folder / "summary.csv").is_file():
            return text + " · no summary yet: resume it", grids, None, gr.Dropdown(choices=[]), \
                gr.Dropdown(choices=[]), None, files
        config, values, table = read_summary(folder / "summary.csv")
        axes = numeric_axes(config, table)
        value, axis = (values[0] if values else None), (axes[0] if axes else None)
        plot = figure(config, table, value, axis) if value and axis else None
        return (text, grids, {"headers": list(table[0]), "data": [list(r.values()) for r in table]} if table else None,
                gr.Dropdown(choices=values, value=value), gr.Dropdown(choices=axes, value=axis), plot, files)

    def reopen_study(name, session: gr.Request):
        """After a resume: the study opened again, with its new grids, table and plots."""
        return open_study(name, session)

    def study_plot(name, value, axis, session: gr.Request):
        folder = folder_of(name, session)
        config, values, table = read_summary(folder / "summary.csv")
        axes = numeric_axes(config, table)
        if value not in values or axis not in axes:
            raise gr.Error(f"value={value!r}, axis={axis!r}: choose a value from {values} and an axis from {axes}.")
        return figure(config, table, value, axis)

    def work(folder: str):
        """The GPU side of a resume: yields each finished cell's number, then the summary."""
        for event in resume(manager, folder):
            yield event if isinstance(event, dict) else event[0].index

    def seconds(folder: str):
        study = load_folder_study(folder)
        return gpu_seconds(study.base_request(), cells=len(study.cells()))

    gpu_work = on_gpu(work, duration=seconds)

    def resume_study(name, session: gr.Request):
        folder = folder_of(name, session)
        try:
            study = load_folder_study(folder)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        done = []
        for event in gpu_work(str(folder)):
            if isinstance(event, dict):
                yield f"**{name}**: {event['finished']} / {event['cells']} cells · {event['status']}", None
                return
            done.append(event)
            shown = [(str(folder / cell_name(i)), f"cell {i}") for i in done[-THUMBNAILS:]]
            yield f"**{name}**: cell {event} done ({len(done)} this run, {len(study.cells())} in all)", shown

    with gr.Tab("Studies", id="studies", elem_id="studies"):
        gr.Markdown("Study folders in the output folder's `studies/` (run one with `llm-dit study run FILE.toml "
                    "--output-dir <output dir>/studies/NAME`; each folder loads with `datasets.load_dataset("
                    "\"imagefolder\", data_dir=...)`)." + (" You see the studies your session started." if
                                                          studio.hosted else ""))
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="studies-refresh")
            chosen = gr.Dropdown(choices=[], label="Study", elem_id="studies-chosen", scale=2)
            show = gr.Button("Open", variant="primary", elem_id="studies-open")
            again = gr.Button("Resume", elem_id="studies-resume")
        listing = gr.Dataframe(headers=COLUMNS, label="Studies", interactive=False, elem_id="studies-list")
        info = gr.Markdown(elem_id="studies-info")
        progress = gr.Gallery(label="Newest cells", columns=THUMBNAILS, height=140, elem_id="studies-progress")
        grids = gr.Gallery(label="Grids (one per reference)", preview=True, object_fit="contain", height=480,
                           elem_id="studies-grids")
        table = gr.Dataframe(label="summary.csv: mean and sd over the seeds (click a header to sort)",
                             interactive=False, wrap=True, elem_id="studies-table")
        with gr.Row():
            value = gr.Dropdown(choices=[], label="Value", elem_id="studies-value")
            axis = gr.Dropdown(choices=[], label="Against axis", elem_id="studies-axis")
        plot = gr.Plot(label="Mean ± sd over the seeds, one line per other setting", elem_id="studies-plot")
        files = gr.File(label="Downloads", file_count="multiple")

    # The tab's own events; an API client reads a study folder with `datasets` instead (private,
    # like the other UI helpers: the public API stays what examples/client_guide.py drives).
    private = {"api_visibility": "private"}
    refresh.click(show_studies, None, [listing, chosen], api_name="show_studies", queue=False, **private)
    show.click(open_study, chosen, [info, grids, table, value, axis, plot, files], api_name="open_study", **private)
    gr.on([value.input, axis.input], study_plot, [chosen, value, axis], plot, api_name="study_plot", queue=False,
          **private)
    again.click(resume_study, chosen, [info, progress], api_name="resume_study", concurrency_id=GPU, **private).then(
        reopen_study, chosen, [info, grids, table, value, axis, plot, files], api_name="reopen_study", **private)

"""Studies tab: the study folders under `<output dir>/studies/` — run a study file over uploaded
references, list, open (grids, summary table, plots), resume an unfinished one. Hosted, a visitor
sees only the studies their own session started."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import gradio as gr

from llm_dit.studies.compare import MAX_CELLS
from llm_dit.studies.runner import cell_name, list_studies, load_folder_study, read_info, resume, run_study
from llm_dit.studies.study import file_sha256, parse_study
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

    def list_after_run(session: gr.Request):
        """After a run: the list, with the new study in it."""
        return show_studies(session)

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

    def work(folder: str, study=None, session: str = ""):
        """The GPU side of a run (`study` given) or a resume: yields each finished cell's number,
        then the summary."""
        events = run_study(manager, study, folder, session) if study is not None else resume(manager, folder)
        for event in events:
            yield event if isinstance(event, dict) else event[0].index

    def seconds(folder: str, study=None, session: str = ""):
        study = study or load_folder_study(folder)
        return gpu_seconds(study.base_request(), cells=len(study.cells()))

    gpu_work = on_gpu(work, duration=seconds)

    def _progress(folder: Path, events, total: int):
        done = []
        for event in events:
            if isinstance(event, dict):
                yield f"**{folder.name}**: {event['finished']} / {event['cells']} cells · {event['status']}", None
                return
            done.append(event)
            shown = [(str(folder / cell_name(i)), f"cell {i}") for i in done[-THUMBNAILS:]]
            yield f"**{folder.name}**: cell {event} done ({len(done)} this run, {total} in all)", shown

    def resume_study(name, session: gr.Request):
        folder = folder_of(name, session)
        try:
            study = load_folder_study(folder)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        yield from _progress(folder, gpu_work(str(folder)), len(study.cells()))

    def _stored(upload) -> str:
        """An uploaded reference, kept under studies/references/<sha256>/ (uploads are temporary;
        a study resumed or re-run later needs the same file)."""
        path = Path(upload)
        store = root / "references" / file_sha256(path)[:32]
        store.mkdir(parents=True, exist_ok=True)
        target = store / path.name
        if not target.exists():
            shutil.copyfile(path, target)
        return str(target)

    def run_study_file(study_file, references, session: gr.Request):
        """Run an uploaded study file (TOML) over the uploaded references into a new study folder."""
        if not study_file:
            raise gr.Error("study_file: none uploaded: upload a study file (TOML), e.g. one of presets/studies/.")
        try:
            data = tomllib.loads(Path(study_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise gr.Error(f"study_file: not a readable TOML file ({err}).") from None
        if studio.hosted and ("structure_image" in data or not references):
            raise gr.Error("references: upload the reference images (a hosted app reads no server paths; "
                           "structure_image is not available here).")
        if references:
            data["references"] = [_stored(r) for r in references]
        try:
            study = parse_study(data, Path(study_file).parent, Path(study_file).stem,
                                scorer=bool(studio.settings.metrics_model))
            cells = study.check(studio.policy)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        if len(cells) > MAX_CELLS:
            raise gr.Error(f"the study has {len(cells)} cells, more than {MAX_CELLS}: use fewer references, "
                           f"values or seeds.")
        folder = root / studio.outputs.stem("study")
        hash_ = getattr(session, "session_hash", None) or ""
        yield from _progress(folder, gpu_work(str(folder), study, hash_), len(cells))

    with gr.Tab("Studies", id="studies", elem_id="studies"):
        gr.Markdown("Study folders in the output folder's `studies/` (run one with `llm-dit study run FILE.toml "
                    "--output-dir <output dir>/studies/NAME`; each folder loads with `datasets.load_dataset("
                    "\"imagefolder\", data_dir=...)`)." + (" You see the studies your session started." if
                                                          studio.hosted else ""))
        with gr.Accordion("Run a study file", open=False):
            with gr.Row():
                study_file = gr.File(label="Study file (TOML)", file_types=[".toml"], elem_id="studies-file")
                uploads = gr.File(label="References (instead of the file's)", file_count="multiple",
                                  file_types=["image"], elem_id="studies-references")
            start = gr.Button("Run study", variant="primary", elem_id="studies-run")
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
    start.click(run_study_file, [study_file, uploads], [info, progress], api_name="run_study_file",
                concurrency_id=GPU, **private).then(list_after_run, None, [listing, chosen], api_name="list_after_run",
                                                    **private)
    again.click(resume_study, chosen, [info, progress], api_name="resume_study", concurrency_id=GPU, **private).then(
        reopen_study, chosen, [info, grids, table, value, axis, plot, files], api_name="reopen_study", **private)

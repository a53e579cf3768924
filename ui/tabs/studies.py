"""Studies tab: the study folders under `<output dir>/studies/` — run a study file over uploaded
references, list, open (grids, summary table, plots), resume an unfinished one. Hosted, a visitor
sees only their own studies (`ui/owners.py`: a token their browser keeps, so a reload keeps them)."""

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
from ..owners import OWNERS
from ..studio import GPU

COLUMNS = ["name", "started", "status", "cells", "size_mb"]
THUMBNAILS = 8  # while a study resumes: its newest cells, small (the grids are drawn once, at the end)


def build(studio, demo: gr.Blocks) -> None:
    manager = studio.manager
    root = Path(studio.settings.output_dir) / "studies"

    def visible(session) -> dict[str, dict]:
        """The studies this visitor may see, by name (hosted: their own only: `ui/owners.py`)."""
        return {s["name"]: s for s in list_studies(root, OWNERS.owner(session) if studio.hosted else None)}

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

    def _checked(data: dict, where: Path, name: str, references, store: bool = True):
        """A study from parsed TOML over the uploaded references, checked as a sweep is: every
        cell's request, the cell count and the hosted budgets (cells × steps × pixels; a batch's pixels). With
        `store`, the uploads are kept under studies/references/ (a check alone stores nothing)."""
        if studio.hosted and ("structure_image" in data or not references):
            raise ValueError("references: upload the reference images (a hosted app reads no server paths; "
                             "structure_image is not available here).")
        if references:
            data["references"] = [_stored(r) if store else str(Path(r)) for r in references]
        study = parse_study(data, where, name, scorer=bool(studio.settings.metrics_model))
        cells = study.check(studio.policy)
        if len(cells) > MAX_CELLS:
            raise ValueError(f"the study has {len(cells)} cells, more than {MAX_CELLS}: use fewer references, "
                             f"values or seeds.")
        studio.policy.budgets.check_sweep([c.request for c in cells], study.batch_size, "study")
        return study, cells

    def _run(data: dict, where: Path, name: str, references, session):
        try:
            study, cells = _checked(data, where, name, references)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        studio.outputs.prune()  # finished studies over --output-keep go before this one adds its cells
        folder = root / studio.outputs.stem("study")
        yield from _progress(folder, gpu_work(str(folder), study, OWNERS.owner(session)), len(cells))

    def run_study_file(study_file, references, session: gr.Request):
        """Run an uploaded study file (TOML) over the uploaded references into a new study folder."""
        if not study_file:
            raise gr.Error("study_file: none uploaded: upload a study file (TOML), e.g. one of presets/studies/.")
        try:
            data = tomllib.loads(Path(study_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise gr.Error(f"study_file: not a readable TOML file ({err}).") from None
        yield from _run(data, Path(study_file).parent, Path(study_file).stem, references, session)

    def _parsed(study_toml: str) -> dict:
        try:
            data = tomllib.loads(study_toml or "")
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"study_toml: not valid TOML ({err}): see presets/studies/*.toml.") from None
        if not data:
            raise ValueError("study_toml is empty: give a study in TOML, e.g. the text of presets/studies/*.toml.")
        return data

    def run_study_text(study_toml: str, references: list, session: gr.Request):
        """Run a study given as TOML text (the format of presets/studies/*.toml) over the uploaded
        references into a new study folder under studies/; streams (progress, newest cells)."""
        try:
            data = _parsed(study_toml)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        yield from _run(data, Path.cwd(), "study", references, session)

    def run_study_text_validator(study_toml: str, references: list):
        """Before the queue: the study's cells, count and budgets (nothing stored, nothing loaded)."""
        try:
            _checked(_parsed(study_toml), Path.cwd(), "study", references, store=False)
        except ValueError as err:
            where = "references" if str(err).startswith("references") else "study_toml"
            return [gr.validate(where != "study_toml", str(err)), gr.validate(where != "references", str(err))]
        return [gr.validate(True, ""), gr.validate(True, "")]

    def list_my_studies(session: gr.Request) -> list[dict]:
        """The study folders this caller may see (hosted: those its session started), newest first:
        name, started, status, cells done / in all, size."""
        return list(visible(session).values())

    def read_study(study: str, session: gr.Request):
        """One listed study: its study.json (the study as run, models, versions, status), its
        summary.csv rows (mean and sd over the seeds), and its files (metadata.jsonl, summary.csv,
        study.json, grids; every cell PNG is in metadata.jsonl's `file_name`)."""
        folder = folder_of(study, session)
        info = read_info(folder)
        # where the server keeps the references is its own business: their names and hashes
        info["study"]["references"] = [{"name": r["name"], "sha256": r["sha256"]} for r in info["study"]["references"]]
        info["study"]["structure_image"] = Path(info["study"].get("structure_image") or "").name
        summary = read_summary(folder / "summary.csv")[2] if (folder / "summary.csv").is_file() else []
        files = [str(folder / n) for n in ("metadata.jsonl", "summary.csv", "study.json") if (folder / n).is_file()]
        return {"info": info, "summary": summary}, files + sorted(str(p) for p in (folder / "grids").glob("*.png"))

    with gr.Tab("Studies", id="studies", elem_id="studies"):
        OWNERS.wire(demo)  # its BrowserState inside a tab: a component directly in gr.Tabs shows as a tab
        gr.Markdown("Study folders in the output folder's `studies/` (run one with `llm-dit study run FILE.toml "
                    "--output-dir <output dir>/studies/NAME`; each folder loads with `datasets.load_dataset("
                    "\"imagefolder\", data_dir=...)`)." + (" You see the studies (and sweeps) this browser started." if
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
        with gr.Column(visible=False):  # the API's own inputs and outputs (run_study_text, list_my_studies, read_study)
            study_toml = gr.Textbox(label="Study (TOML)")
            api_refs = gr.File(label="References", file_count="multiple", file_types=["image"])
            api_run, api_list, api_read = gr.Button("Run"), gr.Button("List"), gr.Button("Read")
            study_name = gr.Textbox(label="Study name")
            study_json = gr.JSON(label="Study")

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
    # The public API: run a study from its TOML text, list the caller's studies, read one.
    api_run.click(run_study_text, [study_toml, api_refs], [info, progress], api_name="run_study_text",
                  validator=run_study_text_validator, concurrency_id=GPU)
    api_list.click(list_my_studies, None, study_json, api_name="list_my_studies", queue=False)
    api_read.click(read_study, study_name, [study_json, files], api_name="read_study")
    again.click(resume_study, chosen, [info, progress], api_name="resume_study", concurrency_id=GPU, **private).then(
        reopen_study, chosen, [info, grids, table, value, axis, plot, files], api_name="reopen_study", **private)

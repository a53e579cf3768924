"""Studies tab: the study folders under `<output dir>/studies/` — run a study file over uploaded
references, list, open (grids, summary table, plots), resume an unfinished one. Hosted, a visitor
sees only their own studies (`ui/owners.py`: a token their browser keeps, so a reload keeps them).

Running or resuming a study is a job like any other: its validator runs the cheap checks (nothing
stored, nothing loaded) and then the hosted admission (`ui.studio.Admission`), before the queue;
the handler runs it with `ui.common.run_cancellable`, so a cancel (Stop), or a client that leaves,
stops it at its next step (the cells finished are kept: Resume finishes it). Uploaded references
are stored under `studies/references/` only once the run starts. Hosted, messages name files by
their base name only."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import shutil
import tomllib
from pathlib import Path

import gradio as gr

from llm_dit.runtime.models import ModelLoadError
from llm_dit.serving.outputs import REFERENCES, STUDIES
from llm_dit.studies.compare import MAX_CELLS
from llm_dit.studies.runner import cell_name, list_studies, load_folder_study, read_info, resume, run_study
from llm_dit.studies.study import file_sha256, parse_study
from llm_dit.studies.summary import figure, numeric_axes, read_summary

from ..common import run_cancellable
from ..gpu import gpu_seconds, on_gpu
from ..owners import OWNERS
from ..studio import GPU

COLUMNS = ["name", "started", "status", "cells", "size_mb"]
THUMBNAILS = 8  # while a study resumes: its newest cells, small (the grids are drawn once, at the end)
STOPPED = "Stopped at its next step: the cells it finished are kept; choose it and click Resume to finish it."
# An absolute path in a message (after a space, quote, bracket or `=`): hosted, only its base name is shown
SERVER_PATH = re.compile(r"(?<![\w.~*/:-])(?:/[^/\s'\"()\[\],;]+)+/([^/\s'\"()\[\],;]+)")
PATH_KEYS = ("structure_image", "control_image", "mask_image")  # files a study names by path: hosted, none


def _base_names(message: str) -> str:
    """`message` with every absolute path replaced by its base name."""
    return SERVER_PATH.sub(r"\1", message)


def build(studio, demo: gr.Blocks) -> None:
    manager = studio.manager
    # resolved once, when the app is built (the output folder is), whatever the working folder later
    root = studio.outputs.path / STUDIES
    here = Path.cwd()  # where a study text's relative paths start (locally; hosted, no path is read)

    def shown(message: str) -> str:
        """A message for the visitor: hosted, files named by their base name only."""
        return _base_names(message) if studio.hosted else message

    def refused(err: Exception) -> gr.Error:
        return gr.Error(shown(str(err)))

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
        """After a run: the list, with the new study (the newest) chosen."""
        listing, _ = show_studies(session)
        newest = listing["data"][0][0] if listing["data"] else None
        return listing, gr.Dropdown(choices=[row[0] for row in listing["data"]], value=newest)

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

    async def _running(job, session):
        """Run `job()` (a generator of updates) off the event loop; a cancel or a departed client
        stops it at its next step, and the GPU slot frees only once it has stopped."""
        try:
            async for item in run_cancellable(job, True, lambda: studio.admission.connected(session),
                                              studio.cache_partition(session)):
                yield item
        except (ValueError, ModelLoadError) as err:  # a load problem's message stays until closed
            raise gr.Error(shown(str(err)), duration=None if isinstance(err, ModelLoadError) else 10) from None

    def _resumable(name, session) -> tuple[Path, int]:
        folder = folder_of(name, session)
        try:
            return folder, len(load_folder_study(folder).cells())
        except ValueError as err:
            raise refused(err) from None

    def resume_study_validator(name, session: gr.Request):
        """Before the queue: the study is this visitor's and resumable; then the admission. (One
        input: gradio takes one gr.validate, not a list of one.)"""
        try:
            _resumable(name, session)
        except gr.Error as err:
            return gr.validate(False, err.message)
        problem = studio.admission.refuse(session, hold=True)
        return gr.validate(problem is None, problem or "")

    async def resume_study(name, session: gr.Request):
        studio.admission.started(session)
        folder, total = await asyncio.to_thread(_resumable, name, session)
        async for item in _running(lambda: _progress(folder, gpu_work(str(folder)), total), session):
            yield item

    def _stored(upload) -> str:
        """An uploaded reference, kept under studies/references/<sha256>-<random>/ (uploads are
        temporary; a study resumed or re-run later needs the same file). The random part keeps a
        visitor's reference from being fetched by whoever holds the same image (the folder is
        served); a stored reference no study names any more is pruned with the studies."""
        path = Path(upload)
        store = root / REFERENCES / f"{file_sha256(path)[:32]}-{secrets.token_hex(8)}"
        store.mkdir(parents=True)
        target = store / path.name
        shutil.copyfile(path, target)
        return str(target)

    def _checked(data: dict, where: Path, name: str, references):
        """A study from parsed TOML over the uploaded references (where they are uploaded), checked
        as a sweep is: every cell's request, the cell count and the hosted budgets (cells × steps ×
        pixels, a batch's pixels). Stores nothing: `_kept` stores the uploads once the run starts."""
        named = [k for k in PATH_KEYS if k in data]
        if studio.hosted and (named or not references):
            raise ValueError(f"references: upload the reference images (a hosted app reads no server paths; "
                             f"{', '.join(named or PATH_KEYS)} {'is' if len(named) == 1 else 'are'} not available "
                             f"here).")
        data = dict(data)
        if references:
            data["references"] = [str(Path(r)) for r in references]
        study = parse_study(data, where, name, scorer=bool(studio.settings.metrics_model))
        try:
            cells = study.check(studio.policy)
        except ValueError as err:
            if "prompt is empty" not in str(err):
                raise
            raise ValueError(f"{err} The study sets no prompt: put `prompt = \"...\"` under [base] (on the "
                             f"Studies tab, the Prompt box above Run study fills it in).") from None
        if len(cells) > MAX_CELLS:
            raise ValueError(f"the study has {len(cells)} cells, more than {MAX_CELLS}: use fewer references, "
                             f"values or seeds.")
        studio.policy.budgets.check_sweep([c.request for c in cells], study.batch_size, "study")
        return study, cells

    def _kept(study):
        """The checked study with its uploaded references stored (they outlive the upload)."""
        return dataclasses.replace(study, references=[dataclasses.replace(r, path=_stored(r.path))
                                                      for r in study.references])

    async def _run(read, references, session):
        """A run's handler: `read()` gives (parsed TOML, its folder, its name); checked again (a raw
        call skips no check), the uploads stored, then the cells run."""
        studio.admission.started(session)

        def prepare():
            try:
                study, cells = _checked(*read(), references)
                return (_kept(study) if references else study), len(cells)
            except ValueError as err:
                raise refused(err) from None

        study, total = await asyncio.to_thread(prepare)
        studio.outputs.prune()  # finished studies over --output-keep go before this one adds its cells
        folder = root / studio.outputs.stem("study")
        owner = OWNERS.owner(session)
        async for item in _running(lambda: _progress(folder, gpu_work(str(folder), study, owner), total), session):
            yield item

    def _read_file(study_file, prompt: str = "") -> tuple[dict, Path, str]:
        """The study file's TOML, its folder and name; the tab's Prompt fills `base.prompt` where the
        file sets none (the presets in presets/studies/ leave it to you)."""
        if not study_file:
            raise ValueError("study_file: none uploaded: upload a study file (TOML), e.g. one of presets/studies/.")
        try:
            data = tomllib.loads(Path(study_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else err  # an OSError's text names the path
            raise ValueError(f"study_file: {Path(study_file).name} is not a readable TOML file ({reason}).") from None
        prompt = (prompt or "").strip()
        if prompt and not (data.get("base") or {}).get("prompt") and "prompt" not in (data.get("axes") or {}):
            data["base"] = {**(data.get("base") or {}), "prompt": prompt}
        return data, Path(study_file).parent, Path(study_file).stem

    def _admitted(check, session, extra: int = 0) -> list:
        """A run validator's answer for (the study, the references): `check()`'s refusal on the
        references when it names them, else on the study; then this session's pending limit (an
        admitted job holds its place until gradio records it: `ui.studio.Admission`)."""
        try:
            check()
        except (ValueError, ModelLoadError) as err:
            on = 1 if str(err).startswith("references") else 0
            return [gr.validate(i != on, shown(str(err)) if i == on else "") for i in range(2)] + \
                [gr.validate(True, "")] * extra
        problem = studio.admission.refuse(session, hold=True)
        return [gr.validate(problem is None, problem or ""), gr.validate(True, "")] + [gr.validate(True, "")] * extra

    def run_study_file_validator(study_file, references, prompt, session: gr.Request):
        """Before the queue: the study file, its cells, count and budgets (nothing stored, nothing
        loaded); then this visitor's pending limit."""
        return _admitted(lambda: _checked(*_read_file(study_file, prompt), references), session, extra=1)

    async def run_study_file(study_file, references, prompt, session: gr.Request):
        """Run an uploaded study file (TOML) over the uploaded references into a new study folder."""
        async for item in _run(lambda: _read_file(study_file, prompt), references, session):
            yield item

    def _parsed(study_toml: str) -> dict:
        try:
            data = tomllib.loads(study_toml or "")
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"study_toml: not valid TOML ({err}): see presets/studies/*.toml.") from None
        if not data:
            raise ValueError("study_toml is empty: give a study in TOML, e.g. the text of presets/studies/*.toml.")
        return data

    async def run_study_text(study_toml: str, references: list, session: gr.Request):
        """Run a study given as TOML text (the format of presets/studies/*.toml) over the uploaded
        references into a new study folder under studies/; streams (progress, newest cells)."""
        async for item in _run(lambda: (_parsed(study_toml), here, "study"), references, session):
            yield item

    def run_study_text_validator(study_toml: str, references: list, session: gr.Request):
        """Before the queue: the study's cells, count and budgets (nothing stored, nothing loaded);
        then this visitor's pending limit."""
        return _admitted(lambda: _checked(_parsed(study_toml), here, "study", references), session)

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

    with gr.Tab("Studies", id="studies", elem_id="studies") as tab:
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
            prompt = gr.Textbox(label="Prompt (for a study file that sets none, as the presets do)", lines=2,
                                elem_id="studies-prompt")
            start = gr.Button("Run study", variant="primary", elem_id="studies-run")
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="studies-refresh")
            chosen = gr.Dropdown(choices=[], label="Study", elem_id="studies-chosen", scale=2)
            show = gr.Button("Open", variant="primary", elem_id="studies-open")
            again = gr.Button("Resume", elem_id="studies-resume")
            stop = gr.Button("Stop", variant="stop", visible=False, elem_id="studies-stop")  # while one runs
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

    def _stop_if(check, session) -> gr.Button:
        """Stop, shown when the job about to start passes `check()` and the pending limit (holding no
        place): a refused job never runs, and gradio runs no `then` after a validator's refusal."""
        try:
            check()
        except (ValueError, ModelLoadError, gr.Error):
            return gr.skip()
        return gr.Button(visible=studio.admission.refuse(session, hold=False) is None)

    def show_run_stop(study_file, references, prompt, session: gr.Request):
        return _stop_if(lambda: _checked(*_read_file(study_file, prompt), references), session)

    def show_resume_stop(name, session: gr.Request):
        return _stop_if(lambda: _resumable(name, session), session)

    def hide_stop():
        return gr.Button(visible=False)

    # The tab's own events; an API client reads a study folder with `datasets` instead (private,
    # like the other UI helpers: the public API stays what examples/client_guide.py drives).
    # Reads of the folder are unqueued: quick, no GPU, and a queued event without a validator was a
    # way to fill the queue and pile up results for a session that never listens.
    private = {"api_visibility": "private"}
    refresh.click(show_studies, None, [listing, chosen], api_name="show_studies", queue=False, **private)
    show.click(open_study, chosen, [info, grids, table, value, axis, plot, files], api_name="open_study", queue=False,
               **private)
    gr.on([value.input, axis.input], study_plot, [chosen, value, axis], plot, api_name="study_plot", queue=False,
          **private)
    ran = start.click(show_run_stop, [study_file, uploads, prompt], stop, queue=False, **private).then(
        run_study_file, [study_file, uploads, prompt], [info, progress], api_name="run_study_file",
        validator=run_study_file_validator, concurrency_id=GPU, **private)
    # after a run: the list with the new study chosen and opened (the newest this visitor may see)
    ran.then(list_after_run, None, [listing, chosen], api_name="list_after_run", queue=False, **private).then(
        reopen_study, chosen, [info, grids, table, value, axis, plot, files], queue=False, **private)
    tab.select(show_studies, None, [listing, chosen], queue=False, **private)  # the list as the tab opens
    # The public API: run a study from its TOML text, list the caller's studies, read one.
    api_ran = api_run.click(run_study_text, [study_toml, api_refs], [info, progress], api_name="run_study_text",
                            validator=run_study_text_validator, concurrency_id=GPU)
    api_list.click(list_my_studies, None, study_json, api_name="list_my_studies", queue=False)
    api_read.click(read_study, study_name, [study_json, files], api_name="read_study", queue=False)
    resumed = again.click(show_resume_stop, chosen, stop, queue=False, **private).then(
        resume_study, chosen, [info, progress], api_name="resume_study", validator=resume_study_validator,
        concurrency_id=GPU, **private)
    resumed.then(reopen_study, chosen, [info, grids, table, value, axis, plot, files], api_name="reopen_study",
                 queue=False, **private)

    def stop_study():
        """Stop: the page's running study (or resume) ends at its next step; its finished cells are kept."""
        return STOPPED

    stop.click(stop_study, None, info, api_name="stop_study", cancels=[ran, resumed, api_ran], queue=False, **private)
    # Stop shows while the page's run or resume is under way (shown first, then the job); gone however
    # it ended (gradio's `then` skips an event that raised: `failure` too)
    for event in (ran, resumed):
        for after in (event.then, event.failure):
            after(hide_stop, None, stop, queue=False, **private)

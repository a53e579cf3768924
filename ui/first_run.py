"""The model status banner: on a first run, which checkpoints the first generation will download;
after a generation whose models could not load, why and how to fix it, kept on the page (a toast
alone vanishes) until a later load succeeds."""

from __future__ import annotations

import gradio as gr

from llm_dit.runtime import download

PRIVATE = {"api_visibility": "private", "queue": False}
SCROLL_TO_BANNER = ("() => { const banner = document.getElementById('model-status'); "
                    "if (banner && banner.classList.contains('load-problem')) "
                    "window.scrollTo({top: Math.max(0, banner.getBoundingClientRect().top + window.scrollY - 16)}); }")


def _not_downloaded(studio) -> list[str]:
    """One line per checkpoint given as a hub id that is not in the local cache yet (no network)."""
    settings, manager = studio.settings, studio.manager
    if settings.tiny:
        return []
    wanted = [("Z-Image checkpoint", settings.model_path, download.ZIMAGE_FILES)]
    if not manager.remote_vl:
        wanted.append(("Qwen3-VL model, for VL conditioning", settings.vl_model_path, download.VL_FILES))
    lines = []
    for what, source, patterns in wanted:
        if download.is_local(source) or download.cached(source, patterns):
            continue
        size = download.known_size(source, patterns)
        how_big = f"{download.human_size(size)} left to download" if size is not None else \
            "its size is asked from the hub on first use"
        lines.append(f"- `{source}` ({what}): {how_big}")
    return lines


def status_text(studio) -> str:
    """The banner's Markdown: the last load problem, else what a first generation downloads, else ""."""
    problem = studio.manager.load_problem
    if problem:
        return f"**⚠ The models could not load.** {problem}".replace("\n", "\n\n")
    lines = _not_downloaded(studio)
    if not lines:
        return ""
    text = ("**First run: not downloaded yet.** The first generation that needs a checkpoint downloads it"
            f"{'' if studio.hosted else f' into `{download.cache_dir()}`'} (once), with its progress under the "
            "result:\n\n" + "\n".join(lines))
    if not studio.hosted:
        text += ("\n\nHave the weights already? Start with `--model-path DIR` / `--vl-model-path DIR`. "
                 "No weights at all: `--tiny`.")
    return text


def _handler(studio):
    def model_status():
        text = status_text(studio)
        problem = ["load-problem"] if studio.manager.load_problem else []
        return gr.Markdown(text, visible=bool(text), elem_classes=problem)

    return model_status


def build(studio) -> gr.Markdown:
    """The banner, filled at each page load."""
    banner = gr.Markdown(visible=False, elem_id="model-status")
    gr.on(None, _handler(studio), outputs=banner, api_name="model_status", **PRIVATE)
    return banner


def wire(studio, banner: gr.Markdown, events) -> None:
    """After each generating event, the banner shows the current state: the load problem that made
    it fail, or nothing once the models loaded. (`.success` and `.failure`: gradio 6.31's page
    runs no `.then` after an error.) After a failure the page scrolls up to it: the Generate
    button that was clicked is often below the fold, and gradio's `scroll_to_output` does not
    scroll for this event."""
    for event in events:
        event.success(_handler(studio), outputs=banner, api_name="model_status", **PRIVATE)
        shown = event.failure(_handler(studio), outputs=banner, api_name="model_status", **PRIVATE)
        shown.then(None, js=SCROLL_TO_BANNER, api_visibility="private", queue=False)

"""This browser's results across tabs: newest first, capped; a click restores them.

The list lives in the browser (`gr.BrowserState`, localStorage), so it survives a page reload and
a server restart. What the browser sends back is the client's word, not ours: gradio's encryption
of it happens in the browser with a key the page carries. So every entry is checked on each use
(`trusted`): its files must lie in the output folder or gradio's upload cache (files anyone could
already fetch from this server) and still exist; anything else is dropped, and a forged list can
make the gallery show no server file it could not already see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

TABS = {"txt2img": "txt2img", "img2img": "img2img", "vl": "vl"}  # metadata mode -> tab
STORAGE_KEY = "z-image-vl-studio-history"
# Not a secret: gradio sends it to the page, which encrypts with it (see the module docstring).
BROWSER_KEY = "z-image-vl-studio"


def add(history: list, image: str | None, metadata: dict | None, inputs: dict, cap: int) -> list:
    """A new list with this result first (nothing is added for a failed run), at most `cap` long.
    Only what a restore needs is kept (the browser's storage is small)."""
    if not image or not metadata:
        return history
    kept = {"mode": metadata["mode"], "seed": metadata["seed"], "request": metadata["request"]}
    entry = {"image": image, "metadata": kept, "inputs": {k: v for k, v in inputs.items() if v}}
    return ([entry] + list(history))[:cap]


def remove(history: list, index: int | None) -> list:
    """The list without entry `index` (the files stay on disk: other people's history may show them)."""
    if index is None or not 0 <= index < len(history):
        return history
    return history[:index] + history[index + 1:]


def caption(entry: dict) -> str:
    meta = entry["metadata"]
    return f"{meta['request']['prompt'][:40]} · {meta['mode']} · seed {meta['seed']}"  # what tells them apart first


def gallery_items(history: list) -> list:
    return [(e["image"], caption(e)) for e in history]


def restore(entry: dict) -> tuple[str, dict, dict]:
    """(tab, request field values, image inputs) to put back for one history entry."""
    meta = entry["metadata"]
    return TABS.get(meta["mode"], "txt2img"), dict(meta["request"]), dict(entry["inputs"])


def roots(output_dir) -> list[Path]:
    """Where a history file may lie: the output folder and gradio's upload cache."""
    return [Path(output_dir).expanduser().resolve(), Path(get_upload_folder()).resolve()]


def allowed_file(value, allowed: list[Path]) -> str | None:
    if not isinstance(value, str) or "\x00" in value:
        return None
    path = Path(value).resolve()
    if not any(path.is_relative_to(root) for root in allowed) or not path.is_file():
        return None
    return str(path)


def trusted(history, allowed: list[Path], cap: int) -> list:
    """The entries of a client-sent list that are well formed and name only allowed, existing
    files; image inputs that fail the check are left out of their entry."""
    if not isinstance(history, list):
        return []
    out = []
    for entry in history[:cap]:
        try:
            image, meta, inputs = allowed_file(entry["image"], allowed), entry["metadata"], entry.get("inputs") or {}
            if image is None or not isinstance(meta["request"], dict) or not isinstance(inputs, dict):
                continue
            caption({"metadata": meta})  # the fields a caption and a restore read are there
        except (KeyError, TypeError, AttributeError):
            continue
        kept = {}
        for key, value in inputs.items():
            if isinstance(value, list):
                files = [f for f in (allowed_file(v, allowed) for v in value) if f]
                if files:
                    kept[key] = files
            elif allowed_file(value, allowed):
                kept[key] = allowed_file(value, allowed)
        out.append({"image": image, "metadata": meta, "inputs": kept})
    return out


@dataclass
class History:
    state: gr.BrowserState  # the entries, in the browser
    selected: gr.State  # the index last clicked in the gallery
    gallery: gr.Gallery
    info: gr.Markdown
    delete: gr.Button
    clear: gr.Button


def build(cap: int) -> History:
    state = gr.BrowserState([], storage_key=STORAGE_KEY, secret=BROWSER_KEY)
    selected = gr.State(None)
    with gr.Accordion(f"History (this browser, newest first, last {cap}; kept across reloads)", open=True):
        gallery = gr.Gallery(label="History: click one to restore its parameters", columns=8, rows=1, height=200,
                             object_fit="contain", preview=False, allow_preview=False, elem_id="history",
                             format="png", fit_columns=False)  # two results: two thumbnails, not two halves
        with gr.Row():
            info = gr.Markdown()
            delete = gr.Button("Remove selected", size="sm", scale=0, min_width=160, elem_id="history-remove",
                               interactive=False)
            clear = gr.Button("Clear history", size="sm", scale=0, min_width=140, elem_id="history-clear")
    return History(state, selected, gallery, info, delete, clear)


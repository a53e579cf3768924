"""This browser session's results across tabs: newest first, capped; a click restores them."""

from __future__ import annotations

import gradio as gr

TABS = {"txt2img": "txt2img", "img2img": "img2img", "vl": "vl"}  # metadata mode -> tab


def add(history: list, image: str | None, metadata: dict | None, inputs: dict, cap: int) -> list:
    """A new list with this result first (nothing is added for a failed run), at most `cap` long."""
    if not image or not metadata:
        return history
    entry = {"image": image, "metadata": metadata, "inputs": {k: v for k, v in inputs.items() if v}}
    return ([entry] + list(history))[:cap]


def caption(entry: dict) -> str:
    meta = entry["metadata"]
    return f"{meta['mode']} · seed {meta['seed']} · {meta['request']['prompt'][:40]}"


def gallery_items(history: list) -> list:
    return [(e["image"], caption(e)) for e in history]


def restore(entry: dict) -> tuple[str, dict, dict]:
    """(tab, request field values, image inputs) to put back for one history entry."""
    meta = entry["metadata"]
    return TABS.get(meta["mode"], "txt2img"), dict(meta["request"]), dict(entry["inputs"])


def build(cap: int):
    state = gr.State([])
    with gr.Accordion(f"History (this browser session, newest first, last {cap})", open=True):
        gallery = gr.Gallery(label="History: click one to restore its parameters", columns=8, rows=1, height=200,
                             object_fit="contain", preview=False, allow_preview=False, elem_id="history",
                             format="png")
        info = gr.Markdown()
    return state, gallery, info

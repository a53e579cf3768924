"""PNG info tab: drop a PNG made here (or by A1111); see it and what its metadata holds, then load
its parameters into the tab that made it with one button, or use the image as img2img's init image."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llm_dit.core.pnginfo import Parameters, read_parameters

from ..history import TABS

TAB_LABELS = {"txt2img": "txt2img", "img2img": "img2img", "vl": "VL conditioning"}  # tab id -> its label


@dataclass
class PngInfo:
    file: gr.File
    preview: gr.Image
    report: gr.Markdown
    load: gr.Button
    as_init: gr.Button  # the PNG itself as img2img's init image
    raw: gr.JSON


def read(path: str) -> tuple[Parameters, str]:
    """The PNG's parameters and the id of the tab they belong to (ValueError: not readable)."""
    params = read_parameters(path)
    return params, TABS.get(params.mode, "txt2img")


def report(params: Parameters) -> str:
    """What was read, the settings that matter most at a glance, and what cannot be used."""
    v = params.values
    glance = [f"prompt “{v['prompt'][:200]}”" if v.get("prompt") else "no prompt"]
    if "width" in v and "height" in v:
        glance.append(f"{v['width']}×{v['height']}")
    glance += [f"{label} {v[key]}" for key, label in (("num_inference_steps", "steps"), ("seed", "seed"),
                                                       ("strength", "strength"), ("alpha", "alpha")) if key in v]
    usable = [] if params.unknown or params.problems else ["Everything in it can be used."]
    return "\n\n".join(params.report().split("\n") + usable + [" · ".join(glance)])


def show_png(path):
    """A dropped PNG: its preview, the report and the button that loads it; nothing is loaded yet."""
    hidden = gr.Button(visible=False)
    if not path:
        return None, "", None, hidden, hidden
    try:
        params, tab = read(path)
    except ValueError as err:
        return None, f"⚠ {err}", None, hidden, hidden
    return (path, report(params), params.values,
            gr.Button(f"Load into {TAB_LABELS[tab]}", visible=True), gr.Button(visible=True))


def build() -> PngInfo:
    with gr.Tab("PNG info", id="pnginfo", elem_id="pnginfo"):
        gr.Markdown("Drop a PNG made by this app, or one with AUTOMATIC1111 `parameters`: its parameters are "
                    "listed here, with anything that cannot be used. **Load into …** puts them into the tab "
                    "that made it; **Use as img2img init image** starts img2img from the picture itself.")
        with gr.Row():
            with gr.Column():
                file = gr.File(label="PNG", file_types=[".png"], type="filepath", elem_id="pnginfo-file", height=120)
                preview = gr.Image(label="Preview", type="filepath", interactive=False, height=420,
                                   elem_id="pnginfo-preview")
            with gr.Column():
                text = gr.Markdown(elem_id="pnginfo-report")
                with gr.Row():
                    load = gr.Button("Load", variant="primary", visible=False, elem_id="pnginfo-load")
                    as_init = gr.Button("Use as img2img init image", visible=False, elem_id="pnginfo-init")
                raw = gr.JSON(label="Metadata found", elem_id="pnginfo-raw")
    file.change(show_png, file, [preview, text, raw, load, as_init], api_name="show_png", api_visibility="private",
                queue=False)
    return PngInfo(file, preview, text, load, as_init, raw)

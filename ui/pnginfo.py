"""PNG info tab: drop a PNG made here (or by A1111) and its parameters load into the right tab."""

from __future__ import annotations

import gradio as gr


def build():
    with gr.Tab("PNG info", id="pnginfo", elem_id="pnginfo"):
        gr.Markdown("Drop a PNG made by this app, or one with AUTOMATIC1111 `parameters`: its parameters "
                    "load into the tab that made it. Anything that cannot be used is listed here.")
        with gr.Row():
            png = gr.File(label="PNG", file_types=[".png"], type="filepath", elem_id="pnginfo-file")
            with gr.Column():
                report = gr.Markdown(elem_id="pnginfo-report")
                raw = gr.JSON(label="Metadata found")
    return png, report, raw

"""txt2img tab: prompt -> image."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from llm_dit.generate import run
from llm_dit.request import GenerationRequest

from .common import generation_form, make_handler, result_panel, saved

FIELDS = [f.name for f in fields(GenerationRequest) if f.name != "strength"]


def build(manager, output_dir: str) -> dict:
    with gr.Tab("txt2img", id="txt2img", elem_id="txt2img"):
        with gr.Row():
            with gr.Column():
                controls = generation_form(FIELDS)
                button = gr.Button("Generate", variant="primary", elem_id="txt2img-generate")
            with gr.Column():
                outputs = result_panel()
        handler = make_handler("txt2img", FIELDS, lambda request: saved(run(manager, request), output_dir))
        button.click(handler, inputs=[controls[f] for f in FIELDS], outputs=list(outputs),
                     api_name="txt2img", concurrency_id="gpu")
    return controls

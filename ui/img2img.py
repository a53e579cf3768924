"""img2img tab: init image + prompt -> image, with the strength semantics of BRIEF §6."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from llm_dit.generate import img2img_plan, run
from llm_dit.request import GenerationRequest

from .common import generation_form, image_input, make_handler, result_panel, saved

FIELDS = [f.name for f in fields(GenerationRequest)]


def strength_readout(num_inference_steps, strength, shift) -> str:
    """A live line under the strength slider: forwards, start sigma, what is kept of the image."""
    try:
        plan = img2img_plan(int(num_inference_steps), float(strength), float(shift))
    except (TypeError, ValueError):
        return ""
    if plan["forwards"] == 0:
        return f"**0 forwards**: strength must be at least {1 / int(num_inference_steps):.3f} at this step count."
    line = (f"{plan['forwards']} of {int(num_inference_steps)} forwards, from sigma "
            f"{plan['start_sigma']:.3f} (the init image keeps {plan['reference_weight']:.1%})")
    if plan["start_index"] == 0:
        line += " — **starts from pure noise: the init image is ignored**"
    return line


def build(manager, output_dir: str) -> dict:
    with gr.Tab("img2img", id="img2img", elem_id="img2img"):
        with gr.Row():
            with gr.Column():
                image = image_input("Init image")
                controls = generation_form(FIELDS)
                readout = gr.Markdown(strength_readout(8, 0.9, 3.0))
                button = gr.Button("Generate", variant="primary", elem_id="img2img-generate")
            with gr.Column():
                outputs = result_panel()
        plan_inputs = [controls["num_inference_steps"], controls["strength"], controls["shift"]]
        for component in plan_inputs:
            component.change(strength_readout, plan_inputs, readout, api_visibility="private",
                             queue=False)
        def action(request, image):
            if image is None:
                raise ValueError("image: img2img needs an init image: upload one first.")
            return saved(run(manager, request, image), output_dir)

        handler = make_handler("img2img", FIELDS, action, leading=("image",))
        button.click(handler, inputs=[image] + [controls[f] for f in FIELDS], outputs=list(outputs),
                     api_name="img2img", concurrency_id="gpu")
    return controls

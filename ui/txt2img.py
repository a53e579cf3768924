"""txt2img tab: prompt -> image."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from llm_dit.generate import run
from llm_dit.request import GenerationRequest, validate

from .common import Endpoint, saved
from .form import TabParts, generation_form, result_panel, wire_reuse
from .gpu import gpu_seconds, on_gpu
from .studio import GPU

FIELDS = [f.name for f in fields(GenerationRequest) if f.name != "strength"]
EXAMPLES = [
    "A red fox curled up asleep in fresh snow at dawn, soft pink light, shallow depth of field.",
    "A lighthouse on a basalt cliff during a storm, waves exploding into spray, oil painting.",
    'A minimalist poster with the words "SLOW MORNINGS" above a steaming cup of coffee, risograph.',
    "Isometric cutaway of a tiny bakery at night, warm windows, people queuing outside, 3D render.",
]


def build(studio) -> TabParts:
    manager = studio.manager
    generate = on_gpu(lambda request: run(manager, request), duration=gpu_seconds)
    with gr.Tab("txt2img", id="txt2img", elem_id="txt2img"):
        with gr.Row():
            with gr.Column():
                form = generation_form(FIELDS, studio)
                button = gr.Button("Generate", variant="primary", elem_id="txt2img-generate")
                gr.Examples(EXAMPLES, inputs=[form.controls["prompt"]], cache_examples=False)
            with gr.Column():
                result = result_panel("txt2img")
        c = form.controls
        endpoint = Endpoint(studio, "txt2img", FIELDS, lambda request: saved(generate(request), studio),
                            check=lambda request: validate(request, policy=studio.policy), outputs=3)
        event = button.click(endpoint.fn, inputs=[c[f] for f in FIELDS],
                             outputs=[result.image, result.seed, result.metadata],
                             api_name="txt2img", concurrency_id=GPU, validator=endpoint.validator)
        wire_reuse(form, result)
    return TabParts("txt2img", c, result, event=event)

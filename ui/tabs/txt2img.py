"""txt2img tab: prompt -> image; its prompt embeddings can be exported as `.safetensors`."""

from __future__ import annotations

import time
from dataclasses import fields

import gradio as gr

from llm_dit.runtime import remote
from llm_dit.pipelines.generate import encode_prompt, run
from llm_dit.core.images import image_size
from llm_dit.core.request import GenerationRequest, validate

from ..common import Endpoint, saved
from ..form import TabParts, generation_form, result_panel, run_bar, reveal_export, wire_reuse
from ..gpu import gpu_seconds, on_gpu
from ..remote import check_encode
from ..studio import GPU

FIELDS = [f.name for f in fields(GenerationRequest) if f.name != "strength"]
EXAMPLES = [
    "A red fox curled up asleep in fresh snow at dawn, soft pink light, shallow depth of field.",
    "A lighthouse on a basalt cliff during a storm, waves exploding into spray, oil painting.",
    'A minimalist poster with the words "SLOW MORNINGS" above a steaming cup of coffee, risograph.',
    "Isometric cutaway of a tiny bakery at night, warm windows, people queuing outside, 3D render.",
]


READOUT = ("num_inference_steps", "width", "height")  # what the run readout reads


def run_readout(num_inference_steps, width, height) -> str:
    """What Generate will run: the forwards (all from pure noise) and the size."""
    try:
        return f"{int(num_inference_steps)} forwards from pure noise (sigma 1.000), {int(width)}×{int(height)} px"
    except (TypeError, ValueError):
        return ""


def check(request, control_image, policy) -> None:
    """Before the queue: the request, and a control image within the image budget (its header only)."""
    validate(request, policy=policy)
    if control_image is not None:
        image_size(control_image, field="control_image", budgets=policy.budgets)


def wire_export(studio, tab: str, fields: list[str], c: dict, button, files, bar) -> None:
    """"Export embeddings": the prompt's text embeddings as a generation encodes them (the same
    cache, and the remote encoder when one is set), in the `encode` endpoint's file layout
    (`llm_dit.runtime.remote.file_parts`), saved in the output folder as `.safetensors`; its `embeds`
    tensor is diffusers' `prompt_embeds` for one image. A private event: `encode` is the public API."""
    manager = studio.manager

    def encode(request):
        prompt = encode_prompt(manager, request)
        return remote.file_parts(manager, prompt.chat, prompt.encoded)

    gpu_encode = on_gpu(encode, duration=lambda request: gpu_seconds(None))

    def action(request):
        tensors, metadata = gpu_encode(request)
        metadata["request"] = request.to_dict()
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{tab}-prompt-embeds.safetensors"
        try:
            path = studio.outputs.write(name, lambda tmp: remote.save(tensors, metadata, tmp))
        except ValueError as err:  # the disk refused: say so, keep serving
            gr.Warning(str(err))
            path = None
        return path and str(path)

    endpoint = Endpoint(studio, f"{tab}_export", fields, action, check=check_encode)
    event = studio.guards.run(endpoint, button, [c[f] for f in fields], [files], bar.message,
                              api_name=f"{tab}_export", api_visibility="private", concurrency_id=GPU)
    reveal_export(event, files)


def build(studio) -> TabParts:
    manager = studio.manager
    generate = on_gpu(lambda request, control_image: run(manager, request, control_image=control_image),
                      duration=lambda request, control_image: gpu_seconds(request))
    with gr.Tab("txt2img", id="txt2img", elem_id="txt2img"):
        with gr.Row():
            with gr.Column():
                form = generation_form(FIELDS, studio)
                gr.Examples(EXAMPLES, inputs=[form.controls["prompt"]], cache_examples=False)
            with gr.Column():
                bar = run_bar("txt2img", ("Export embeddings", "txt2img-export-embeddings"))
                button, export = bar.buttons
                with gr.Group(elem_classes="run-readout"):
                    readout = gr.Markdown(run_readout(*(form.controls[f].value for f in READOUT)),
                                          elem_id="txt2img-readout")
                result = result_panel("txt2img")
        c = form.controls
        plan = [c[f] for f in READOUT]
        gr.on([p.change for p in plan], run_readout, plan, readout, api_visibility="private", queue=False)
        endpoint = Endpoint(studio, "txt2img", FIELDS, lambda request, control_image: saved(
                                generate(request, control_image), studio), leading=("control_image",),
                            check=lambda request, control_image: check(request, control_image, studio.policy),
                            outputs=3, sized=True)
        event = studio.guards.run(endpoint, button, [c["_control_image"]] + [c[f] for f in FIELDS],
                                  [result.image, result.seed, result.metadata], bar.message, bar.stop,
                                  api_name="txt2img", concurrency_id=GPU)
        wire_export(studio, "txt2img", FIELDS, c, export, result.files, bar)
        wire_reuse(form, result)
    return TabParts("txt2img", c, result, event=event, reset=form.reset)

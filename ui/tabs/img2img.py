"""img2img tab: init image + prompt -> image, with the strength semantics of BRIEF §6; its prompt
embeddings can be exported as `.safetensors` (as in txt2img)."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr
from PIL import Image

from llm_dit.pipelines.generate import img2img_plan, run
from llm_dit.core.images import image_size
from llm_dit.core.request import CONTROL_FIELDS, GenerationRequest, field_meta, validate

from ..common import Endpoint, control, image_input, saved
from ..form import TabParts, generation_form, result_panel, run_bar, wire_reuse
from ..gpu import gpu_seconds, on_gpu
from ..studio import GPU
from .txt2img import wire_export

FIELDS = [f.name for f in fields(GenerationRequest) if f.name not in CONTROL_FIELDS]  # no ControlNet img2img
EXAMPLES = [
    "The same scene as a loose watercolour on rough paper.",
    "The same composition at night, lit by neon signs in the rain.",
    "The same subject as a bronze statue in a museum hall.",
]


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


READOUT = ("num_inference_steps", "strength", "shift")  # what the strength readout reads


def wire_strength_readout(c: dict, readout) -> None:
    plan = [c[f] for f in READOUT]
    for component in plan:
        component.change(strength_readout, plan, readout, api_visibility="private", queue=False)


INIT_HEIGHT = 260  # px: the init image, the prompt and strength fit above the fold
MASK_BRUSH = gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=24)  # seen on any image; only the strokes' shape counts


def _editor_on(image):
    """The mask editor shows the new init image, with no strokes."""
    return {"background": str(image), "layers": [], "composite": str(image)} if image is not None else None


def _drawn_mask(drawn):
    """The strokes drawn over the init image as the request's mask: white where painted, black
    elsewhere, at the init image's size. No stroke layer yet (the editor just showed the image):
    the mask stays as it is (an uploaded one too); every stroke erased: no mask."""
    layers = (drawn or {}).get("layers") or []
    if not layers or drawn.get("background") is None:
        return gr.skip()
    size = drawn["background"].size
    mask = Image.new("L", size, 0)
    for layer in layers:
        painted = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a else 0)
        mask.paste(255, (0, 0), painted.resize(size, Image.Resampling.NEAREST))
    return mask if mask.getbbox() else None


def main_controls(c: dict, steps: int) -> None:
    """Under the prompt: strength beside the step count (the checkpoint's) it takes a share of."""
    with gr.Row():
        c["strength"], c["num_inference_steps"] = control("strength"), control("num_inference_steps", value=steps)


def check(request, image, policy, mask_image=None) -> None:
    """Before the queue: the request, and an init image (and mask) that open."""
    validate(request, img2img=True, policy=policy)
    if image is None:
        raise ValueError("image: img2img needs an init image: upload one first.")
    image_size(image, field="image", budgets=policy.budgets)  # the header only: decoded once, in the job
    if mask_image is not None:
        image_size(mask_image, field="mask_image", budgets=policy.budgets)


def build(studio) -> TabParts:
    manager = studio.manager
    generate = on_gpu(lambda request, image, mask: run(manager, request, image, mask_image=mask),
                      duration=lambda request, image, mask: gpu_seconds(request))

    def action(request, image, mask_image):
        return saved(generate(request, image, mask_image), studio)

    with gr.Tab("img2img", id="img2img", elem_id="img2img"):
        with gr.Row():
            with gr.Column():
                image = image_input("Init image", height=INIT_HEIGHT, elem_id="img2img-image")
                steps = manager.request_defaults().get("num_inference_steps", field_meta("num_inference_steps")["default"])
                form = generation_form(FIELDS, studio, main=lambda c: main_controls(c, steps))
                with gr.Accordion("Inpaint mask (optional)", open=False):
                    editor = gr.ImageEditor(label="Paint over what to redraw (the rest is kept)", type="pil",
                                            sources=(), transforms=(), layers=False, brush=MASK_BRUSH,
                                            height=INIT_HEIGHT, elem_id="img2img-mask-editor")
                    mask = image_input("Mask: white is redrawn, black kept (painted above, or uploaded)",
                                       elem_id="img2img-mask")
                gr.Examples(EXAMPLES, inputs=[form.controls["prompt"]], cache_examples=False)
            with gr.Column():
                bar = run_bar("img2img", ("Export embeddings", "img2img-export-embeddings"))
                button, export = bar.buttons
                with gr.Group(elem_classes="run-readout"):
                    readout = gr.Markdown(strength_readout(*(form.controls[f].value for f in READOUT)),
                                          elem_id="img2img-readout")
                result = result_panel("img2img")
        c = form.controls
        wire_strength_readout(c, readout)
        image.change(_editor_on, image, editor, api_visibility="private", queue=False)
        editor.input(_drawn_mask, editor, mask, api_visibility="private", queue=False)  # (no change events for strokes)
        endpoint = Endpoint(studio, "img2img", FIELDS, action, leading=("image", "mask_image"), outputs=3, sized=True,
                            check=lambda request, image, mask_image: check(request, image, studio.policy,
                                                                           mask_image))
        event = studio.guards.run(endpoint, button, [image, mask] + [c[f] for f in FIELDS],
                                  [result.image, result.seed, result.metadata], bar.message, bar.stop,
                                  api_name="img2img", concurrency_id=GPU)
        wire_export(studio, "img2img", FIELDS, c, export, result.files, bar)
        wire_reuse(form, result)
    return TabParts("img2img", c, result, {"image": image}, event, form.reset)

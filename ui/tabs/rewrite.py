"""Prompt rewriting tab: a short idea -> a detailed prompt, then "use this prompt" in any tab."""

from __future__ import annotations

from dataclasses import fields

import gradio as gr

from llm_dit.core.images import image_size
from llm_dit.core.request import SAMPLING_PRESETS, RewriteRequest, validate_rewrite
from llm_dit.pipelines.rewrite import rewrite_stream
from llm_dit.core.templates import get_template, names, shipped

from ..common import Endpoint, control, image_input
from ..guard import message_box, stop_button
from ..fields import FieldDropdown
from ..gpu import gpu_seconds, on_gpu
from ..studio import HTTP, HTTP_LIMIT

FIELDS = [f.name for f in fields(RewriteRequest)]
SAMPLING = ["temperature", "top_p", "top_k", "min_p"]


def list_templates() -> list[dict]:
    """Every shipped template (style and rewriter) with its category and description."""
    templates, _ = shipped()
    return [{"name": t.name, "category": t.category, "description": t.description} for t in templates.values()]


def check(request, image, policy) -> None:
    """Before the queue: the request under the hosting policy, and an image that opens."""
    validate_rewrite(request, has_image=image is not None, policy=policy)
    if image is not None:
        image_size(image, field="image", budgets=policy.budgets)


def build(studio) -> dict:
    """The tab; returns the result box and the 'use this prompt' buttons for cross-tab wiring."""
    manager, policy = studio.manager, studio.policy
    with gr.Tab("Prompt rewriting", id="rewrite", elem_id="rewrite"):
        _, errors = shipped()
        if errors:
            gr.Markdown("**Some templates could not be loaded:**\n\n" + "\n".join(f"- `{e}`" for e in errors))
        with gr.Row():
            with gr.Column():
                c = {"prompt": control("prompt", label="Idea to rewrite", elem_id="rewrite-idea",
                                       info="a short idea; the rewriter expands it into a detailed prompt",
                                       placeholder="e.g. a fox in the snow")}
                with gr.Row(equal_height=True):
                    button = gr.Button("Rewrite", variant="primary", elem_id="rewrite-go", scale=2)
                    stop = stop_button("rewrite-stop")
                message = message_box("rewrite-refusal")
                c["template"] = FieldDropdown(choices=names("rewriter"), value=RewriteRequest.template,
                                            label="Rewriter template")
                template_info = gr.Markdown(get_template(RewriteRequest.template, "rewriter").description)
                c["backend"] = control("backend")
                image = image_input("Image (for qwen3_vl or a vision server)", height=200)
                with gr.Accordion("Sampling", open=False):
                    for f in ["thinking"] + SAMPLING + ["max_new_tokens", "seed"]:
                        c[f] = control(f)
                with gr.Accordion("OpenAI-compatible server", open=False):
                    servers = list(policy.rewrite_servers)
                    c["server"] = FieldDropdown(choices=[("(none)", "")] + servers, value=servers[0] if servers else "",
                                              label="Server", info="configured by the operator (--rewrite-servers)")
                    c["model"] = control("model")
                    for f in ("base_url", "api_key_env"):  # local only: hosted, a client names no URL or secret
                        c[f] = control(f, visible=not studio.hosted)
                    c["timeout"] = control("timeout")
            with gr.Column():
                result = gr.Textbox(label="Rewritten prompt (editable)", lines=8, elem_id="rewrite-result",
                                    interactive=True)
                with gr.Row():
                    uses = {tab: gr.Button(f"Use in {label}", size="sm", elem_id=f"use-in-{tab}")
                            for tab, label in (("txt2img", "txt2img"), ("img2img", "img2img"), ("vl", "VL conditioning"))}
                with gr.Accordion("Raw reply", open=False):
                    raw = gr.Textbox(label="Raw reply (thinking included)", lines=6)
                metadata = gr.JSON(label="Metadata", elem_id="rewrite-metadata")

        def stream(request, image):
            yield from rewrite_stream(manager, request, image)

        gpu_stream = on_gpu(stream, duration=lambda request, image: gpu_seconds(None, new_tokens=request.max_new_tokens))

        def action(request, image):
            chunks = rewrite_stream(manager, request, image) if request.backend == "openai" else gpu_stream(
                request, image)  # an HTTP server needs no GPU slot
            for partial in chunks:
                yield partial.text or "", partial.raw, partial.metadata or None

        # HTTP rewrites never hold the GPU slot; local backends run beside generations (the text
        # encoder is shared, under its own lock) and stop at the next token when cancelled.
        endpoint = Endpoint(studio, "rewrite", FIELDS, action, ("image",), RewriteRequest, stream=True, outputs=3,
                            check=lambda request, image: check(request, image, policy))
        studio.guards.run(endpoint, button, [image] + [c[f] for f in FIELDS], [result, raw, metadata], message,
                          stop, api_name="rewrite", concurrency_id=HTTP, concurrency_limit=HTTP_LIMIT)
        c["template"].change(lambda name: get_template(name, "rewriter").description, c["template"],
                             template_info, api_visibility="private", queue=False)
        c["thinking"].change(lambda on: list(SAMPLING_PRESETS["thinking" if on else "instruct"].values()),
                             c["thinking"], [c[f] for f in SAMPLING], api_visibility="private", queue=False)
        gr.api(list_templates, api_name="templates", queue=False)  # quick, no GPU: never a queue place
    return {"result": result, "uses": uses}

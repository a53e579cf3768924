"""The Gradio Blocks app: one module per tab; models live in the manager, never in gr.State."""

from __future__ import annotations

import gradio as gr

from llm_dit.models import ModelManager
from llm_dit.settings import Settings

from . import img2img, rewrite, txt2img, vl

TINY_BANNER = (
    "**Offline tiny models in use** (`--tiny`): random weights, so every image is noise. "
    "The controls, metadata and API are real; point `--model-path` at Z-Image-Turbo for pictures."
)


def build_demo(settings: Settings, manager: ModelManager | None = None) -> gr.Blocks:
    manager = manager or ModelManager(settings)
    with gr.Blocks(title="Z-Image VL Studio") as demo:
        gr.Markdown("# Z-Image VL Studio\nZ-Image-Turbo with full prompt control and zero-shot style transfer from reference images through Qwen3-VL. Models load on first use.")
        if settings.tiny:
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
        with gr.Tabs() as tabs:
            prompts = {
                "txt2img": txt2img.build(manager, settings.output_dir)["prompt"],
                "img2img": img2img.build(manager, settings.output_dir)["prompt"],
                "vl": vl.build(manager, settings.output_dir)["prompt"],
            }
            rewriter = rewrite.build(manager)
        for tab, button in rewriter["uses"].items():
            button.click(lambda text, tab=tab: (text, gr.Tabs(selected=tab)), rewriter["result"],
                         [prompts[tab], tabs], api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo

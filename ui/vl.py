"""VL conditioning tab: reference image(s) + prompt -> Qwen3-VL extraction -> blend -> DiT."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import gradio as gr

from llm_dit import conditioning
from llm_dit.request import VLRequest

from .common import control, generation_form, image_input, make_handler, result_panel, saved
from .img2img import strength_readout

FIELDS = [f.name for f in fields(VLRequest)]
EXTRACTION = ["vl_use_prompt", "vl_text", "vl_system_prompt", "vl_think_block", "vl_hidden_layer",
              "vl_text_hidden_layer", "token_mode", "vl_composition", "image_text_ratio", "reference_weights"]
BLEND = ["blend_mode", "length_mode", "scale_to_text", "target_std", "normalization", "outlier_mode",
         "outlier_threshold"]


def alpha_readout(report: dict | None, alpha: float) -> str:
    if not report:
        return f"alpha {alpha:.2f} · effective alpha appears after a first extraction"
    return (f"alpha {alpha:.2f} → **effective alpha {report['effective_alpha']:.3f}** "
            f"(where the blend sits between text and VL once the DiT RMS-normalises each token)")


def token_map(report: dict) -> str:
    rows = ["| extraction | mode | template | image | markers | text | used | cached |", "|---|---|---|---|---|---|---|---|"]
    for i, ex in enumerate(report["extractions"]):
        t = ex["tokens"]
        rows.append(f"| {i} | {ex['token_mode']} | {t['template']} | {t['image']} | {t['marker']} | "
                    f"{t['text']} | {t['selected']} | {'yes' if ex['cached'] else 'no'} |")
    return "\n".join(rows)


def _references(files) -> list:
    if not files:
        raise ValueError("references: no reference image: upload at least one image.")
    return [getattr(f, "name", f) for f in files]


def build(manager, output_dir: str) -> dict:
    def extras(c):
        with gr.Accordion("VL extraction (Qwen3-VL)", open=True):
            for f in EXTRACTION:
                c[f] = control(f)
        with gr.Accordion("Blend", open=True):
            c["alpha"] = control("alpha")
            c["_alpha_readout"] = gr.Markdown(alpha_readout(None, 0.3), elem_id="vl-effective-alpha")
            for f in BLEND:
                c[f] = control(f)

    with gr.Tab("VL conditioning", id="vl", elem_id="vl"):
        with gr.Row():
            with gr.Column():
                references = gr.File(label="Reference image(s)", file_count="multiple", file_types=["image"],
                                     type="filepath", elem_id="vl-references")
                structure = image_input("Structure image (optional: init latents instead of the first reference)",
                                        field="structure_image")
                c = generation_form(FIELDS, preset_file="vl.toml", extra=extras)
                readout = c.pop("_alpha_readout")
                strength_md = gr.Markdown(strength_readout(8, 0.9, 3.0))
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="vl-generate")
                    extract_button = gr.Button("Extract only", elem_id="vl-extract")
            with gr.Column():
                outputs = result_panel()
                with gr.Accordion("Diagnostics", open=True):
                    tokens = gr.Markdown(elem_id="vl-token-map")
                    stats = gr.JSON(label="Statistics and effective alpha")
                    export = gr.File(label="Conditioning export (.safetensors)")

        def generate_action(request, references, structure_image):
            result = conditioning.vl_generate(manager, request, _references(references), structure_image)
            report = result.metadata["vl"]
            return (*saved(result, output_dir), report, token_map(report), alpha_readout(report, request.alpha))

        def extract_action(request, references):
            cond = conditioning.condition(manager, request, _references(references))
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-vl-conditioning.safetensors"
            path = conditioning.export(cond, request, Path(output_dir) / name)
            return cond.report, str(path), token_map(cond.report), alpha_readout(cond.report, request.alpha)

        def preview_action(request, references):
            """Blend-only recompute from cached extractions: never loads the VL model on a slider move."""
            try:
                cond = conditioning.condition(manager, request, _references(references), cache_only=True)
            except LookupError:
                return alpha_readout(None, request.alpha)
            except ValueError as err:
                return f"⚠ {err}"
            return alpha_readout(cond.report, request.alpha)

        inputs = [c[f] for f in FIELDS]
        go.click(make_handler("vl_generate", FIELDS, generate_action, ("references", "structure_image"), VLRequest),
                 inputs=[references, structure] + inputs, outputs=[*outputs, stats, tokens, readout],
                 api_name="vl_generate", concurrency_id="gpu")
        extract_button.click(make_handler("vl_extract", FIELDS, extract_action, ("references",), VLRequest),
                             inputs=[references] + inputs, outputs=[stats, export, tokens, readout],
                             api_name="vl_extract", concurrency_id="gpu")
        preview = make_handler("vl_preview", FIELDS, preview_action, ("references",), VLRequest)
        for f in ["alpha", "image_text_ratio", "reference_weights"] + BLEND:
            c[f].change(preview, [references] + inputs, readout, api_visibility="private",
                        concurrency_id="preview", trigger_mode="always_last")
        plan = [c["num_inference_steps"], c["strength"], c["shift"]]
        for component in plan:
            component.change(strength_readout, plan, strength_md, api_visibility="private", queue=False)
    return c

"""Docstrings of the API handlers: what each endpoint does and every parameter, from the request
fields' declarations. Gradio shows them in the API page and serves them as the MCP tools'
descriptions, so an agent sees the same ranges and defaults the UI enforces."""

from __future__ import annotations

from llm_dit.core.request import field_help

SUMMARIES = {
    "txt2img": "Generate an image from a text prompt with Z-Image-Turbo (8 steps, no guidance). Returns the PNG "
               "(its generation parameters embedded), the seed used and the metadata.",
    "img2img": "Redraw an init image following a prompt; strength sets how much changes (0.5 keeps the layout, "
               "0.9 keeps only colours). Returns the PNG, the seed used and the metadata.",
    "vl_generate": "Style transfer: generate from a prompt conditioned on reference image(s) through Qwen3-VL "
                   "(its hidden states blended into the text embeddings by alpha), as img2img from the reference "
                   "at strength. Returns the PNG, seed, metadata, blend statistics and a token map.",
    "vl_extract": "Run only the VL extraction and blend (no image): returns the statistics, a .safetensors file "
                  "with the blended prompt embeddings, the token map and the effective alpha.",
    "vl_preview": "Recompute the blend readout from cached extractions only.",
    "vl_layer_scan": "One Qwen3-VL forward on the first reference: for every hidden layer and for image and text "
                     "tokens, the global std, the per-dim std correlation with the text encoder and the outlier "
                     "dims. Returns the two plots' data, a CSV and the suggested vl_hidden_layer.",
    "compare": "A comparison sweep over up to three axes of the VL settings: returns labelled grids, a table of "
               "cells with metrics, the cell PNGs and counts of the extractions and encodes actually run. "
               "The sweep is a study folder: read_study reads it by the name its progress gives.",
    "rewrite": "Rewrite a short idea into a detailed prompt with a rewriter template, by the local Qwen3, "
               "Qwen3-VL (which can look at an image) or an OpenAI-compatible server.",
    "encode": "Prompt embeddings from this instance's text encoder, as a .safetensors file (tensor `embeds`, "
              "metadata: chat text, token count, caption limit, model, hidden size, layers). Another instance "
              "started with --text-encoder-url uses it.",
    "vl_encode": "One Qwen3-VL extraction for a reference image and text, as a .safetensors file (tensors "
                 "`embeds`, `is_image`; metadata: token counts, model, hidden size, layers). Another instance "
                 "started with --vl-url uses it.",
}
LEADING = {
    "image": "Init image file (PNG, JPEG, WebP, ...).",
    "references": "Reference image file(s) whose look conditions the image.",
    "structure_image": "Optional image whose layout starts the denoising instead of the first reference.",
    "mask_image": "Optional inpaint mask: white is redrawn, black kept from the init (or structure) image.",
    "control_image": "Optional image whose layout the ControlNet follows (--controlnet-path; txt2img, or VL at "
                     "strength 1.0): its canny edges, or a ready map with control_preprocess none.",
    "reference": "Reference image file (optional when vl_text is given).",
    "x_axis": "Sweep axis across: a VL setting (e.g. alpha, blend_mode, strength, vl_hidden_layer) or route.",
    "x_values": "Values of the X axis, comma-separated (vl_text: |-separated; prompt: one per line).",
    "y_axis": "Optional axis down ('' for none).",
    "y_values": "Values of the Y axis.",
    "z_axis": "Optional axis over grids (one grid each; '' for none).",
    "z_values": "Values of the Z axis.",
    "cell_limit": "Refuse sweeps with more cells than this (1 to 1024).",
    "batch_size": "Cells per pipeline call where they can share one (1 to 16).",
    "diff_base": "A cell number: every cell's difference heatmap against it (-1 for none).",
}


def docstring(name: str, leading: tuple, fields: list[str], request_cls) -> str:
    """A Google-style docstring: the endpoint's summary, then one line per parameter."""
    lines = [SUMMARIES.get(name, name), "", "Args:"]
    lines += [f"    {p}: {LEADING[p]}" for p in leading]
    lines += [f"    {f}: {field_help(f, request_cls)}." for f in fields]
    return "\n".join(lines)

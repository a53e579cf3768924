"""Controls built from the request's declared fields, and the generic generate handler."""

from __future__ import annotations

import inspect

import gradio as gr

from llm_dit.generate import attention_backends, run
from llm_dit.images import load_image
from llm_dit.models import ModelLoadError
from llm_dit.presets import load_presets
from llm_dit.request import GenerationRequest, check_number, field_meta

LONG_TEXT = {"prompt": 3, "negative_prompt": 2, "system_prompt": 2, "thinking_content": 2,
             "assistant_content": 2, "loras": 2}


def control(name: str):
    """A gradio component for one request field: label, default and range come from the field."""
    meta = field_meta(name)
    common = {"label": meta["label"], "info": meta["info"] or None, "value": meta["default"]}
    if name == "attention_backend":
        return gr.Dropdown(choices=attention_backends(), **common)
    if "choices" in meta:
        return gr.Dropdown(choices=list(meta["choices"]), **common)
    if isinstance(meta["default"], bool):
        return gr.Checkbox(**common)
    if isinstance(meta["default"], str):
        return gr.Textbox(lines=LONG_TEXT.get(name, 1), **common)
    if "step" not in meta:  # seed: free integer entry
        number = gr.Number(precision=0, minimum=meta["minimum"], maximum=meta["maximum"], **common)
    else:
        number = gr.Slider(minimum=meta["minimum"], maximum=meta["maximum"], step=meta["step"], **common)
    return explain_rejections(number, lambda payload: check_number(name, payload))


def explain_rejections(component, check):
    """Gradio checks some inputs itself before our code runs (number bounds, image decoding), with
    messages that name neither the field nor the fix ("Value 101 is greater than maximum value
    100."). When it rejects a payload, run `check(payload)`, which raises our ValueError, instead."""
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        try:
            return gradio_preprocess(payload)
        except Exception:
            try:
                check(payload)
            except ValueError as err:
                raise gr.Error(str(err)) from None
            raise

    component.preprocess = preprocess
    return component


def image_input(label: str, field: str = "image"):
    """An upload that hands us the original file (no gradio conversion: 16-bit, alpha and CMYK
    are converted by `llm_dit.images.load_image`), with our message for unreadable files."""
    image = gr.Image(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"])
    return explain_rejections(image, lambda payload: load_image(getattr(payload, "path", None), field=field))


def make_handler(name: str, fields: list[str], manager, output_dir: str, with_image: bool = False):
    """A handler whose API parameters are exactly `fields` (plus `image` first for img2img).

    It builds one GenerationRequest, runs it, saves the PNG (with metadata) to `output_dir` and
    returns (png path, seed used, metadata). Bad input becomes a gr.Error naming the field.
    """
    params = [inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if with_image else []
    params += [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=field_meta(f)["default"])
               for f in fields]
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=gr.Progress(track_tqdm=True)))
    signature = inspect.Signature(params)

    def handler(*args, **kwargs):
        values = signature.bind(*args, **kwargs).arguments
        values.pop("progress", None)
        image = values.pop("image", None)
        if with_image and image is None:
            raise gr.Error("image: img2img needs an init image: upload one first.")
        try:
            request = GenerationRequest(**values)
            result = run(manager, request, image) if with_image else run(manager, request)
        except (ValueError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err
        path = result.save(output_dir)
        return str(path), result.seed, result.metadata

    handler.__name__ = handler.__qualname__ = name
    handler.__signature__ = signature
    return handler


def generation_form(fields: list[str]) -> dict:
    """The controls of a generation tab, laid out in groups; returns {field: component}."""
    presets = {name: p for name, p in load_presets().items() if set(p["values"]) <= set(fields)}
    with gr.Row():
        picker = gr.Dropdown(choices=list(presets), value=None, label="Preset", scale=1,
                             info="sets steps, shift, guidance… (presets/generation.toml)")
        note = gr.Markdown()
    c = {}
    c["prompt"] = control("prompt")
    with gr.Row():
        for f in ("height", "width"):
            c[f] = control(f)
    with gr.Row():
        for f in ("num_inference_steps", "seed"):
            c[f] = control(f)
    if "strength" in fields:
        c["strength"] = control("strength")
    with gr.Accordion("Prompt format (Qwen3 chat)", open=False):
        for f in ("system_prompt", "thinking_content", "assistant_content"):
            c[f] = control(f)
        with gr.Row():
            for f in ("force_think_block", "strip_quotes"):
                c[f] = control(f)
        with gr.Row():
            for f in ("hidden_layer", "long_prompt_mode"):
                c[f] = control(f)
    with gr.Accordion("Sampling, LoRA, attention", open=False):
        with gr.Row():
            for f in ("shift", "guidance_scale"):
                c[f] = control(f)
        for f in ("negative_prompt", "loras", "attention_backend"):
            c[f] = control(f)
    names = list(c)

    def apply_preset(name):
        if name not in presets:
            return [gr.skip()] * (len(names) + 1)
        values = presets[name]["values"]
        return [presets[name]["description"]] + [values.get(f, gr.skip()) for f in names]

    picker.change(apply_preset, picker, [note] + [c[f] for f in names], api_visibility="private",
                  queue=False)
    return c


def result_panel():
    image = gr.Image(label="Result", type="filepath", format="png", interactive=False)
    seed = gr.Number(label="Seed used", value=None, precision=0, interactive=False)
    metadata = gr.JSON(label="Metadata")
    return image, seed, metadata

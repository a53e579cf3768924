"""Controls built from the request's declared fields, and the generic generate handler."""

from __future__ import annotations

import inspect

import gradio as gr

from llm_dit.generate import attention_backends
from llm_dit.images import load_image
from llm_dit.models import ModelLoadError
from llm_dit.presets import PRESETS_DIR, load_presets
from llm_dit.templates import names as template_names
from llm_dit.request import GenerationRequest, check_number, field_meta

LONG_TEXT = {"prompt": 3, "negative_prompt": 2, "system_prompt": 2, "thinking_content": 2,
             "assistant_content": 2, "loras": 2}


def control(name: str):
    """A gradio component for one request field: label, default and range come from the field."""
    meta = field_meta(name)
    common = {"label": meta["label"], "info": meta["info"] or None, "value": meta["default"]}
    if name == "attention_backend":
        return gr.Dropdown(choices=attention_backends(), **common)
    if name == "template":
        return gr.Dropdown(choices=[("(none)", "")] + template_names("style"), **common)
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


def make_handler(name: str, fields: list[str], action, leading: tuple = (), request_cls=GenerationRequest,
                 stream: bool = False):
    """A handler whose API parameters are `leading` (e.g. images) then exactly `fields`.

    It builds one request of `request_cls` and returns `action(request, **leading values)`
    (with `stream`, yields what the generator `action` yields). Bad input becomes a gr.Error
    naming the field, the value and the fix.
    """
    params = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for p in leading]
    params += [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=field_meta(f)["default"])
               for f in fields]
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=gr.Progress(track_tqdm=True)))
    signature = inspect.Signature(params)

    def prepare(args, kwargs):
        values = signature.bind(*args, **kwargs).arguments
        values.pop("progress", None)
        extra = {p: values.pop(p, None) for p in leading}
        return request_cls(**values), extra

    def handler(*args, **kwargs):
        request, extra = prepare(args, kwargs)
        try:
            return action(request, **extra)
        except (ValueError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err

    def stream_handler(*args, **kwargs):
        request, extra = prepare(args, kwargs)
        try:
            yield from action(request, **extra)
        except (ValueError, ModelLoadError) as err:
            raise gr.Error(str(err)) from err

    chosen = stream_handler if stream else handler
    chosen.__name__ = chosen.__qualname__ = name
    chosen.__signature__ = signature
    return chosen


def saved(result, output_dir: str):
    """Handler outputs for a generation: PNG path (saved with metadata), seed used, metadata."""
    return str(result.save(output_dir)), result.seed, result.metadata


def generation_form(fields: list[str], preset_file: str = "generation.toml", extra=None) -> dict:
    """The controls of a generation tab, laid out in groups; returns {field: component}.
    `extra(c)` may add more controls (into the same dict) before the sampling group."""
    presets = {name: p for name, p in load_presets(PRESETS_DIR / preset_file).items()
               if set(p["values"]) <= set(fields)}
    with gr.Row():
        picker = gr.Dropdown(choices=list(presets), value=None, label="Preset", scale=1,
                             info=f"sets several controls at once (presets/{preset_file})")
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
    c["template"] = control("template")
    with gr.Accordion("Prompt format (Qwen3 chat)", open=False):
        for f in ("system_prompt", "thinking_content", "assistant_content"):
            c[f] = control(f)
        with gr.Row():
            for f in ("force_think_block", "strip_quotes"):
                c[f] = control(f)
        with gr.Row():
            for f in ("hidden_layer", "long_prompt_mode"):
                c[f] = control(f)
    if extra is not None:
        extra(c)
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

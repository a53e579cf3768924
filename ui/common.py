"""Controls built from the request's declared fields, and the generic request handler."""

from __future__ import annotations

import inspect

import gradio as gr

from llm_dit.generate import attention_backends
from llm_dit.images import load_image
from llm_dit.models import ModelLoadError
from llm_dit.templates import names as template_names
from llm_dit.request import GenerationRequest, check_number, field_meta

from .docs import docstring

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
                 stream: bool = False, with_session: bool = False):
    """A handler whose API parameters are `leading` (e.g. images) then exactly `fields`.

    It builds one request of `request_cls` and returns `action(request, **leading values)`
    (with `stream`, yields what the generator `action` yields; with `with_session`, the action
    also gets gradio's `session` request, e.g. for a per-browser stop flag). Bad input becomes a
    gr.Error naming the field, the value and the fix.
    """
    params = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for p in leading]
    params += [inspect.Parameter(f, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=field_meta(f)["default"])
               for f in fields]
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=gr.Progress(track_tqdm=True)))
    if with_session:  # gradio fills a gr.Request parameter itself; it is not an API parameter
        params.append(inspect.Parameter("session", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                        annotation=gr.Request))
    signature = inspect.Signature(params)

    def prepare(args, kwargs):
        values = signature.bind(*args, **kwargs).arguments
        values.pop("progress", None)
        extra = {p: values.pop(p, None) for p in leading + (("session",) if with_session else ())}
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
    chosen.__doc__ = docstring(name, leading, fields, request_cls)  # API page and MCP tool descriptions
    chosen.__annotations__ = {"session": gr.Request} if with_session else {}
    return chosen


def saved(result, output_dir: str):
    """Handler outputs for a generation: PNG path (saved with metadata), seed used, metadata."""
    return str(result.save(output_dir)), result.seed, result.metadata

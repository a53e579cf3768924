"""Input components that hand the raw value to our own checks.

Gradio checks some inputs itself before an event's function (or validator) runs: number bounds,
dropdown choices, image decoding. Its messages name neither the field nor the fix ("Value -5 is
less than minimum value -1"), and a failed check in the validator phase reaches API clients as a
bare HTTP 400. These subclasses keep gradio's widgets (same front-end component, same bounds
shown to the user) but pass the payload through, so that `llm_dit.core.request.validate`, run by the
event's validator before the queue, gives the message. Being classes (not patched instances),
they survive gradio's per-session copies of components after a preset or history restore.
"""

from __future__ import annotations

import gradio as gr
from gradio import processing_utils

from llm_dit.core.images import UploadedFile


class _PassThrough:
    """Mixin: the same front-end component as the gradio base class; no gradio-side rejection."""

    def get_block_name(self) -> str:
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("gradio.components"))
        return base.__name__.lower()


class FieldNumber(_PassThrough, gr.Number):
    def preprocess(self, payload):
        return payload


class FieldSlider(_PassThrough, gr.Slider):
    def preprocess(self, payload):
        return payload


class FieldDropdown(_PassThrough, gr.Dropdown):
    def preprocess(self, payload):
        return payload


class UploadImage(_PassThrough, gr.Image):
    """An image upload handed over as its file path, unopened; `llm_dit.core.images.load_image` reads
    it (16-bit, alpha, CMYK, EXIF) and names the field when it cannot. Uploads are referred to by
    their original file name in messages."""

    def preprocess(self, payload):
        if payload is None:
            return None
        if getattr(payload, "url", None) and str(payload.url).startswith("data:"):
            # an inline image: written to gradio's cache as it came (the request body's budget
            # bounds it), never decoded here: its size is checked from the header like an upload's
            path = processing_utils.save_base64_to_cache(str(payload.url), self.GRADIO_CACHE)
            return UploadedFile(path, getattr(payload, "orig_name", None) or "the inline image")
        return UploadedFile(payload.path, getattr(payload, "orig_name", None))

"""The form survives a reload: each generating tab's controls and uploads are kept in the browser
(`gr.BrowserState`) as they change and put back when the page loads; uploads only while the file
is still where the app may serve it from (the output folder, gradio's upload cache). "Reset to
defaults" puts one tab back to the request's declared defaults, its uploads emptied."""

from __future__ import annotations

import gradio as gr

from llm_dit.core.request import field_meta

from .history import BROWSER_KEY, allowed_file

STORAGE_KEY = "z-image-vl-studio-forms"
PRIVATE = {"api_visibility": "private", "queue": False}


def _default(name: str):
    return True if name == "_randomize" else field_meta(name)["default"]


def _files(value, allowed):
    """An upload's value from the browser, kept only where it names allowed, existing files."""
    if isinstance(value, list):
        files = [f for f in (allowed_file(v, allowed) for v in value) if f]
        return files or None
    return allowed_file(value, allowed)


def wire(parts: dict, allowed: list, demo: gr.Blocks) -> None:
    state = gr.BrowserState({}, storage_key=STORAGE_KEY, secret=BROWSER_KEY)
    for tab, part in parts.items():
        controls, inputs = list(part.controls), list(part.inputs)
        components = [part.controls[f] for f in controls] + [part.inputs[k] for k in inputs]

        def keep(forms, *values, tab=tab, controls=controls, inputs=inputs):
            forms = dict(forms) if isinstance(forms, dict) else {}
            forms[tab] = {"controls": dict(zip(controls, values)), "inputs": dict(zip(inputs, values[len(controls):]))}
            return forms

        keep.__name__ = f"{tab}_keep_form"
        gr.on([c.change for c in components], keep, [state, *components], state, **PRIVATE)

        def restore(forms, tab=tab, controls=controls, inputs=inputs):
            form = forms.get(tab) if isinstance(forms, dict) else None
            if not isinstance(form, dict):
                return [gr.skip()] * (len(controls) + len(inputs))
            kept, files = form.get("controls") or {}, form.get("inputs") or {}
            return [kept.get(f, gr.skip()) for f in controls] + [
                _files(files.get(k), allowed) if files.get(k) else gr.skip() for k in inputs]

        restore.__name__ = f"{tab}_restore_form"
        demo.load(restore, state, components, **PRIVATE)

        def reset(controls=controls, inputs=inputs):
            return [_default(f) for f in controls] + [None] * len(inputs)

        reset.__name__ = f"{tab}_reset_form"
        if part.reset is not None:
            part.reset.click(reset, None, components, **PRIVATE)

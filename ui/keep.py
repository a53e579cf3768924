"""The form survives a reload: each generating tab's controls and uploads are kept in the browser
(`gr.BrowserState`, one per tab) as they change and put back when the page loads; uploads only while the file
is still where the app may serve it from (the output folder, gradio's upload cache). "Reset to
defaults" puts one tab back to the request's declared defaults, its uploads emptied."""

from __future__ import annotations

import gradio as gr

from llm_dit.core.request import check_field, field_meta

from .history import BROWSER_KEY, allowed_file

STORAGE_KEY = "z-image-vl-studio-forms"
PRIVATE = {"api_visibility": "private", "queue": False}


def _default(name: str):
    return True if name == "_randomize" else field_meta(name)["default"]


def _value(name: str, value):
    """A stored control value as the request checks it (the browser's copy may be stale or edited):
    gr.skip() where it does not pass."""
    if name == "_randomize":
        return value if isinstance(value, bool) else gr.skip()
    try:
        return check_field(name, value)
    except (ValueError, TypeError):
        return gr.skip()


def _files(value, allowed):
    """An upload's value from the browser, kept only where it names allowed, existing files."""
    if isinstance(value, list):
        files = [f for f in (allowed_file(v, allowed) for v in value) if f]
        return files or None
    return allowed_file(value, allowed)


def wire(parts: dict, allowed: list, demo: gr.Blocks) -> None:
    for tab, part in parts.items():
        # one stored form per tab: two tabs saving at once never write over each other
        state = gr.BrowserState({}, storage_key=f"{STORAGE_KEY}-{tab}", secret=BROWSER_KEY)
        # uploads among the controls (the control image: an event input, no request field) are kept
        # as files, like the tab's image inputs
        uploads = {k: v for k, v in part.controls.items() if isinstance(v, (gr.Image, gr.File))}
        controls = [f for f in part.controls if f not in uploads]
        inputs = list(part.inputs) + list(uploads)
        components = [part.controls[f] for f in controls] + [{**part.inputs, **uploads}[k] for k in inputs]

        restored = gr.State(False)  # nothing is kept before the stored form is back (the page's own
        # updates while it loads would otherwise store the defaults over it)

        def keep(ready, *values, controls=controls, inputs=inputs):
            if not ready:
                return gr.skip()
            return {"controls": dict(zip(controls, values)), "inputs": dict(zip(inputs, values[len(controls):]))}

        keep.__name__ = f"{tab}_keep_form"
        # always_last: one save in flight per tab and the newest one after it (gr.on's default,
        # "once", dropped the changes made while a save was running: a reload right after typing
        # then brought back an older form)
        gr.on([c.change for c in components], keep, [restored, *components], state, trigger_mode="always_last",
              **PRIVATE)

        def restore(form, controls=controls, inputs=inputs, components=components):
            """The stored form back (what passes the request's checks)."""
            if not isinstance(form, dict) or not form:
                return [True] + [gr.skip()] * len(components)
            kept, files = form.get("controls") or {}, form.get("inputs") or {}
            return [True] + [_value(f, kept[f]) if f in kept else gr.skip() for f in controls] + [
                _files(files.get(k), allowed) if files.get(k) else gr.skip() for k in inputs]

        restore.__name__ = f"{tab}_restore_form"
        # then kept as the page shows it: what was typed while the page loaded is not lost
        demo.load(restore, state, [restored, *components], **PRIVATE).then(
            keep, [restored, *components], state, **PRIVATE)

        def reset(controls=controls, inputs=inputs):
            return [_default(f) for f in controls] + [None] * len(inputs)

        reset.__name__ = f"{tab}_reset_form"
        if part.reset is not None:
            part.reset.click(reset, None, components, **PRIVATE)

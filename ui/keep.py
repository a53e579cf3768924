"""The form survives a reload: each generating tab's controls and uploads are kept in the browser
(`gr.BrowserState`, one per tab) as they change and put back when the page loads; uploads only while the file
is still where the app may serve it from (the output folder, gradio's upload cache). "Reset to
defaults" puts one tab back to the request's declared defaults, its uploads emptied."""

from __future__ import annotations

import json

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


def _keep_js(controls: list, inputs: list) -> str:
    """The browser stores the form itself, in the change's own tick: no round trip to the server to
    lose to a reload, and no server event at all. (A server event kept with trigger_mode
    "always_last" made a storm: when a deferred event finishes, gradio 6.31's front end re-dispatches
    every listener of the first trigger, not only the deferred one, and the size fields' other
    always_last listeners (preset match, run readout) deferred and re-dispatched each other: a size
    typed by hand re-sent the form every ~0.2 s for 10-30 s, and a reload in that time could keep an
    older form.) Uploads are kept as their server paths, as the request reads them."""
    return f"""(ready, ...values) => {{
  if (!ready) return undefined;
  const path = (v) => Array.isArray(v) ? v.map(path) : (v && typeof v === "object" && "path" in v) ? v.path : v;
  const named = (names, vals) => Object.fromEntries(names.map((n, i) => [n, vals[i] ?? null]));
  return {{controls: named({json.dumps(controls)}, values),
          inputs: named({json.dumps(inputs)}, values.slice({len(controls)}).map(path))}};
}}"""


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

        # nothing is kept before the stored form is back (the page's own updates while it loads would
        # otherwise store the defaults over it); a hidden checkbox, as the browser reads it
        restored = gr.Checkbox(False, visible=False)
        gr.on([c.change for c in components], None, [restored, *components], state,
              js=_keep_js(controls, inputs), **PRIVATE)

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
            None, [restored, *components], state, js=_keep_js(controls, inputs), **PRIVATE)

        def reset(controls=controls, inputs=inputs):
            return [_default(f) for f in controls] + [None] * len(inputs)

        reset.__name__ = f"{tab}_reset_form"
        if part.reset is not None:
            part.reset.click(reset, None, components, **PRIVATE)

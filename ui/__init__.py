"""The Gradio Blocks app: one module per tab; models live in the manager, never in gr.State.

Cross-tab wiring lives here: send-to buttons, "use this prompt", the history gallery and PNG info
all write into the tabs' own controls.
"""

from __future__ import annotations

import gradio as gr

import logging

from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.settings import Settings

from . import first_run, history, keep, remote
from .limits import BodyLimit
from .tabs import compare, img2img, pnginfo, rewrite, status, studies, txt2img, vl
from .studio import QUEUE_SIZE, Studio

log = logging.getLogger("llm_dit.app")

# Send-to carries what both tabs share, except what belongs to the target: a new seed, its own strength.
NOT_SENT = {"seed", "strength"}
SCROLL_TO_TABS = ("() => { const tabs = document.getElementById('studio-tabs'); "
                  "if (tabs && tabs.getBoundingClientRect().top < 0) "
                  "window.scrollTo({top: tabs.getBoundingClientRect().top + window.scrollY - 8}); }")

TINY_BANNER = (
    "**Offline tiny models in use** (`--tiny`): random weights, so every image is noise. "
    "The controls, metadata and API are real; point `--model-path` at Z-Image-Turbo for pictures."
)


def _targets(parts: dict) -> list:
    """Every component a restore may write: each tab's controls, then its image inputs (a flag)."""
    out = []
    for name, part in parts.items():
        out += [(name, field, comp, False) for field, comp in part.controls.items()]
        out += [(name, key, comp, True) for key, comp in part.inputs.items()]
    return out


def _updates(targets: list, tab: str, values: dict, files: dict | None = None) -> list:
    """Updates for a restore into `tab`: its controls from `values`, its image inputs only from
    `files` (checked files: a value the client sent that names a file would be served by gradio
    as the input's new value). A restored seed is used as is, so "Random seed" goes off with it
    (the controls agree with what will run)."""
    if "seed" in values:
        values = {**values, "_randomize": False}
    files = files or {}
    return [(files if is_input else values).get(field, gr.skip()) if name == tab else gr.skip()
            for name, field, _, is_input in targets]


class StudioBlocks(gr.Blocks):
    """Blocks whose answer to a raw call with too few values names the parameters it lacks."""

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) < len(block_fn.inputs):
            names = getattr(block_fn.fn, "__signature__", None)
            params = [p for p in (names.parameters if names else ()) if p not in ("progress", "session")]
            missing = params[len(inputs):len(block_fn.inputs)] or [f"{len(block_fn.inputs) - len(inputs)} more"]
            name = (block_fn.name or "this event").removesuffix("_validator")
            raise ValueError(f"{name}: got {len(inputs)} value(s) for "
                             f"{len(block_fn.inputs)} parameters; missing: {', '.join(missing)}. Send every "
                             f"parameter (gradio_client fills in the defaults for you).")
        super().validate_inputs(block_fn, inputs)


def launch_options(settings: Settings, environ=None) -> dict:
    """What `launch()` needs from the settings: the output folder may be served (a Space's /data
    is outside the working and temp folders), uploads and request bodies are capped, the share
    link decided here (never left to gradio, so the policy knows), MCP tools when asked for
    (locally only); and the page's style rules (gradio 6 takes them at launch)."""
    import os
    from pathlib import Path

    from starlette.middleware import Middleware

    from llm_dit.serving.policy import from_settings, share_wanted

    environ = os.environ if environ is None else environ
    policy = from_settings(settings, environ)
    if settings.mcp_server and policy.hosted:
        raise ValueError(f"mcp_server: this app is hosted ({policy.reason}), and gradio's MCP server gives every "
                         "MCP client one shared session: one client's jobs would count against all the others' and "
                         "a departed client's job would run on. Serve MCP only where you alone reach the app "
                         "(--hosting local on loopback), or leave out --mcp-server.")
    body = [Middleware(BodyLimit, limit=policy.budgets.body_bytes, upload_mb=settings.max_upload_mb,
                       upload_limit=policy.budgets.upload_bytes,
                       client_upload_limit=policy.budgets.client_upload_bytes, window_s=policy.cache_max_age_s,
                       trusted_proxy=settings.trusted_proxy if policy.hosted else "")]
    if policy.hosted:  # uvicorn (gradio's server) rewrites the peer from X-Forwarded-For sent by any
        # loopback peer (its default), before the per-client limits see it: a tunnel, a share link or a
        # local proxy would let each request name its own address. Only --trusted-proxy is believed.
        os.environ["FORWARDED_ALLOW_IPS"] = settings.trusted_proxy
    return {"allowed_paths": [str(Path(settings.output_dir).expanduser().resolve())],
            "max_file_size": settings.max_upload_mb * 1024 * 1024,
            "share": share_wanted(settings.share, environ)[0], "app_kwargs": {"middleware": body},
            "mcp_server": settings.mcp_server, "css": stylesheet()}


def stylesheet() -> str:
    """The page's few style rules: every `ui/css/*.css`, one file per area of the page."""
    from pathlib import Path

    return "\n".join(p.read_text() for p in sorted((Path(__file__).parent / "css").glob("*.css")))


def build_demo(settings: Settings, manager: ModelManager | None = None) -> gr.Blocks:
    studio = Studio.create(settings, manager)
    manager = studio.manager
    log.info("hosting: %s; %s", studio.policy.describe(), studio.policy.budgets.describe())
    log.info("%s", "\n".join(manager.memory_plan().lines()))  # decided before any model loads
    if settings.zero_gpu:
        manager.preload()  # ZeroGPU: placed at start-up, never offloaded (FACTS.md)
    age = studio.policy.cache_max_age_s
    with StudioBlocks(title="Z-Image VL Studio", delete_cache=(3600, age) if age else None) as demo:
        gr.Markdown("# Z-Image VL Studio\nZ-Image-Turbo with full prompt control and zero-shot style transfer "
                    "from reference images through Qwen3-VL. Models load on first use.")
        if settings.tiny:
            gr.Markdown(TINY_BANNER, elem_id="tiny-banner")
        model_status = first_run.build(studio)
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            parts = {p.name: p for p in (txt2img.build(studio), img2img.build(studio), vl.build(studio))}
            compare.build(studio, parts["vl"])
            studies.build(studio, demo)
            rewriter = rewrite.build(studio)
            png = pnginfo.build()
            status.build(studio)
        studio.guards.wire(tabs)  # every run button: a refusal where it is seen, a Stop while it runs
        remote.build(studio)  # encode / vl_encode endpoints: encoding for another instance
        hist = history.build(settings.history_size)
        targets = _targets(parts)
        components = [comp for _, _, comp, _ in targets]
        private = {"api_visibility": "private", "queue": False}
        allowed, cap = history.roots(settings.output_dir), settings.history_size

        # send-to: a result into img2img (init image) or VL (reference), with its prompt, size and the
        # settings both tabs share; the seed and strength stay the target's own
        for part in parts.values():
            for target, key in (("img2img", "image"), ("vl", "references")):
                button = part.result.to_img2img if target == "img2img" else part.result.to_vl
                sent = [f for f in parts[target].controls
                        if f in part.controls and f not in NOT_SENT and not f.startswith("_")]

                def send_to(path, metadata, sent=sent, key=key, target=target):
                    if not path:
                        gr.Info("No result yet: generate once, then send it.")
                        return [gr.skip()] * (len(sent) + 2)
                    request = (metadata or {}).get("request", {})
                    values = [request.get(f, gr.skip()) for f in sent]
                    return [[path] if key == "references" else path, gr.Tabs(selected=target)] + values

                button.click(send_to, [part.result.image, part.result.metadata],
                             [parts[target].inputs[key], tabs] + [parts[target].controls[f] for f in sent],
                             api_name=f"send_{part.name}_to_{target}", **private)
        for tab, button in rewriter["uses"].items():
            button.click(lambda text, tab=tab: (text, gr.Tabs(selected=tab)), rewriter["result"],
                         [parts[tab].controls["prompt"], tabs], **private)

        # history: every successful result, newest first, kept in the browser; a click restores it
        for part in parts.values():
            keys = list(part.inputs)

            def remember(entries, image, metadata, *inputs, keys=keys):
                entries = history.add(history.trusted(entries, allowed, cap), image, metadata,
                                      dict(zip(keys, inputs)), cap)
                return entries, history.gallery_items(entries)

            part.event.success(remember, [hist.state, part.result.image, part.result.metadata,
                                          *[part.inputs[k] for k in keys]], [hist.state, hist.gallery], **private)
            part.event.success(lambda: gr.Number(visible=True), None, part.result.seed, api_name="show_seed",
                               **private)
        first_run.wire(studio, model_status, [part.event for part in parts.values()])

        def history_show(entries):
            """The gallery from the browser's list (on page load), checked entry by entry."""
            entries = history.trusted(entries, allowed, cap)
            return entries, history.gallery_items(entries)

        demo.load(history_show, hist.state, [hist.state, hist.gallery], api_name="history_show", **private)
        keep.wire(parts, allowed, demo)  # the forms survive a reload; "Reset to defaults" per tab

        def restore(entries, evt: gr.SelectData):
            entries = history.trusted(entries, allowed, cap)
            if not 0 <= evt.index < len(entries):
                return [gr.skip()] * (len(components) + 4)
            entry = entries[evt.index]
            tab, values, inputs = history.restore(entry)
            note = f"Restored {history.caption(entry)} into **{tab}**."
            return [note, evt.index, gr.Button(interactive=True), gr.Tabs(selected=tab)] + _updates(
                targets, tab, values, inputs)

        restored = hist.gallery.select(restore, [hist.state], [hist.info, hist.selected, hist.delete, tabs]
                                       + components, api_name="restore", **private)
        # the history sits below the tabs: show the tab just filled, its Generate button in view
        restored.then(None, js=SCROLL_TO_TABS, **private)

        def history_remove(entries, index):
            entries = history.remove(history.trusted(entries, allowed, cap), index)
            return entries, history.gallery_items(entries), "Removed from the history.", None, gr.Button(
                interactive=False)

        hist.delete.click(history_remove, [hist.state, hist.selected],
                          [hist.state, hist.gallery, hist.info, hist.selected, hist.delete],
                          api_name="history_remove", **private)

        def history_clear():
            return [], [], "History cleared.", None, gr.Button(interactive=False)

        hist.clear.click(history_clear, None, [hist.state, hist.gallery, hist.info, hist.selected, hist.delete],
                         api_name="history_clear", **private)

        def load_png(path):
            """The PNG info button: the dropped PNG's parameters into their tab, which is shown."""
            if not path:
                return [gr.skip(), gr.skip()] + [gr.skip()] * len(components)
            try:
                params, tab = pnginfo.read(path)
            except ValueError as err:
                return [f"⚠ {err}", gr.skip()] + [gr.skip()] * len(components)
            report = pnginfo.report(params) + f"\n\nLoaded into **{pnginfo.TAB_LABELS[tab]}**."
            files, note = pnginfo.references(params, allowed, studio.policy.budgets.image_pixels,
                                              studio.policy.hosted) if tab == "vl" else ({}, "")
            return [report + note, gr.Tabs(selected=tab)] + _updates(targets, tab, params.values, files)

        png.load.click(load_png, png.file, [png.report, tabs] + components, **private).then(
            None, js=SCROLL_TO_TABS, **private).then(None, js=pnginfo.MARK_MISSING_JS, **private)
        def png_as_init(path):
            """The dropped PNG (an upload, checked by gradio like any) as img2img's init image; the
            tab keeps its own prompt and settings."""
            return (path, gr.Tabs(selected="img2img")) if path else (gr.skip(), gr.skip())

        png.as_init.click(png_as_init, png.file, [parts["img2img"].inputs["image"], tabs], **private).then(
            None, js=SCROLL_TO_TABS, **private)
    # api_open=False: a queued event cannot be called by a direct POST that skips the queue (and
    # with it the GPU slot, the validator and the pending limit).
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE, api_open=False)
    studio.admission.demo = demo
    return demo

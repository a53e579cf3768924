"""Status tab: loaded models and their memory, caches, the last generation's timeline."""

from __future__ import annotations

import gradio as gr


def _mb(n) -> str:
    return "—" if n is None else f"{n / 2**20:,.1f}"


def render(status: dict) -> tuple[str, str, str]:
    models = ["| model | class | device | dtype | MB |", "|---|---|---|---|---|"]
    models += [f"| {m['component']} | {m['class']} | {m['device']} | {m['dtype']} | {_mb(m['bytes'])} |"
               for m in status["models"]] or ["| (nothing loaded yet: models load on first use) | | | | |"]
    caches = "\n".join(
        f"- **{name}**: {c['entries']} of {c['size']} entries, {c['hits']} hits, {c['misses']} misses"
        for name, c in (("VL extractions", status["vl_cache"]), ("prompt encodings", status["text_cache"])))
    timeline = ["| stage | seconds | process RSS MB | CUDA peak MB |", "|---|---|---|---|"]
    timeline += [f"| {s['name']} | {s['seconds']:.3f} | {_mb(s['rss_bytes'])} | {_mb(s['cuda_peak_bytes'])} |"
                 for s in status["last_timeline"]] or ["| (no generation yet) | | | |"]
    return "\n".join(models), caches, "\n".join(timeline)


def render_plan(lines: list[str], levers: dict) -> str:
    """The memory plan (decided before loading) and the levers in force."""
    head, *rest = lines
    lever_text = ", ".join(f"{k}: {v or 'none'}" for k, v in levers.items() if k != "plan")
    lines = [f"**{head[0].upper() + head[1:]}**", "", f"- levers: {lever_text}"] + [f"- {line}" for line in rest]
    return "\n".join(lines)


def build(manager):
    with gr.Tab("Status", id="status", elem_id="status") as tab:
        gr.Markdown(render_plan(manager.memory_plan().lines(), manager.memory_levers()), elem_id="status-plan")
        models = gr.Markdown(elem_id="status-models")
        caches = gr.Markdown(elem_id="status-caches")
        gr.Markdown("**Last generation, stage by stage**")
        timeline = gr.Markdown(elem_id="status-timeline")
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="status-refresh")
            # On ZeroGPU the models are placed once at start-up; unloading would cost every later call.
            unload = gr.Button("Unload models", variant="stop", elem_id="status-unload",
                               visible=not manager.settings.zero_gpu)
            clear = gr.Button("Clear caches", elem_id="status-clear")
    outputs = [models, caches, timeline]

    def show():
        return render(manager.status())

    def do_unload():
        manager.unload()  # waits for a running generation: it is never broken
        return show()

    def do_clear():
        manager.clear_caches()
        return show()

    for trigger, fn in ((tab.select, show), (refresh.click, show), (unload.click, do_unload), (clear.click, do_clear)):
        trigger(fn, None, outputs, api_visibility="private", queue=False)

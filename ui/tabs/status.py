"""Status tab: loaded models and their memory, caches, the last generation's timeline."""

from __future__ import annotations

import time

import gradio as gr


def _mb(n) -> str:
    return "—" if n is None else f"{n / 2**20:,.1f}"


def render(status: dict, stages: list) -> tuple[str, str, str]:
    models = ["| model | class | device | dtype | MB |", "|---|---|---|---|---|"]
    models += [f"| {m['component']} | {m['class']} | {m['device']} | {m['dtype']} | {_mb(m['bytes'])} |"
               for m in status["models"]] or ["| (nothing loaded yet: models load on first use) | | | | |"]
    caches = "\n".join(
        f"- **{name}**: {c['entries']} of {c['size']} entries, {c['hits']} hits, {c['misses']} misses"
        for name, c in (("VL extractions", status["vl_cache"]), ("prompt encodings", status["text_cache"])))
    timeline = ["| stage | seconds | process RSS MB | CUDA peak MB |", "|---|---|---|---|"]
    timeline += [f"| {s['name']} | {s['seconds']:.3f} | {_mb(s['rss_bytes'])} | {_mb(s['cuda_peak_bytes'])} |"
                 for s in stages] or ["| (no generation yet) | | | |"]
    return "\n".join(models), caches, "\n".join(timeline)


def hosting(studio) -> str:
    """The hosting policy in force, as the status tab and the start-up log show it."""
    p = studio.policy
    lines = [f"**Hosting: {p.describe()}**."]
    if p.hosted:
        lines.append("Remote clients choose rewrite servers and LoRAs only by name; admin actions are off; no "
                     "server paths are shown.")
    lines.append(f"Rewrite servers: {', '.join(p.rewrite_servers) or 'none configured'} · "
                 f"LoRAs offered: {len(p.lora_names())} · uploads up to {studio.settings.max_upload_mb} MB · "
                 f"pending jobs per session: {p.max_pending or 'no limit'}, per client address: "
                 f"{p.max_pending_client or 'no limit'} · Output files kept: {p.output_keep or 'all'}")
    lines.append(p.budgets.describe())
    return "\n\n".join(lines)


def render_plan(lines: list[str], levers: dict) -> str:
    """The memory plan (decided before loading) and the levers in force."""
    head, *rest = lines
    lever_text = ", ".join(f"{k}: {v or 'none'}" for k, v in levers.items() if k != "plan")
    lines = [f"**{head[0].upper() + head[1:]}**", "", f"- levers: {lever_text}"] + [f"- {line}" for line in rest]
    return "\n".join(lines)


def build(studio):
    manager = studio.manager
    with gr.Tab("Status", id="status", elem_id="status") as tab:
        gr.Markdown(hosting(studio), elem_id="status-hosting")
        gr.Markdown(render_plan(manager.memory_plan().lines(), manager.memory_levers()), elem_id="status-plan")
        models = gr.Markdown(elem_id="status-models")
        caches = gr.Markdown(elem_id="status-caches")
        gr.Markdown("**Your last generation, stage by stage**" if studio.hosted
                    else "**Last generation, stage by stage**")
        timeline = gr.Markdown(elem_id="status-timeline")
        # Admin actions exist only for a local user: hosted, they are not registered at all, so no
        # client can call them, by name or by fn_index. On ZeroGPU the models are placed once at
        # start-up; unloading would cost every later call.
        admin = not studio.hosted and not manager.settings.zero_gpu
        done = gr.Markdown(elem_id="status-done")  # what the last action did, right above its button
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="status-refresh")
            if admin:
                unload = gr.Button("Unload models", variant="stop", elem_id="status-unload")
                clear = gr.Button("Clear caches", elem_id="status-clear")
    outputs = [models, caches, timeline]

    def show(session: gr.Request = None):
        """Models, aggregate cache counters, and the timeline of this visitor's own last generation
        (hosted; locally the last one): another visitor's timing would tell what they asked for."""
        return render(manager.status(), studio.timeline_of(session))

    def do_unload():
        manager.unload()  # waits for a running generation: it is never broken
        return (*show(), f"Unloaded every model at {time.strftime('%H:%M:%S')}; the next request loads again.")

    def do_clear():
        manager.clear_caches()
        return (*show(), f"Cleared the VL-extraction and prompt caches at {time.strftime('%H:%M:%S')}.")

    for trigger in (tab.select, refresh.click):
        trigger(show, None, outputs, api_visibility="private", queue=False)
    if admin:
        unload.click(do_unload, None, outputs + [done], api_visibility="private", queue=False)
        clear.click(do_clear, None, outputs + [done], api_visibility="private", queue=False)

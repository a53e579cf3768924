"""PNG info tab: drop a PNG made here (or by A1111); see it and what its metadata holds, then load
its parameters into the tab that made it with one button, or use the image as img2img's init image."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llm_dit.core.pnginfo import Parameters, find_images, read_parameters

from ..history import TABS

TAB_LABELS = {"txt2img": "txt2img", "img2img": "img2img", "vl": "VL conditioning"}  # tab id -> its label
MISSING = "Missing reference"
# after loading: a reference the app no longer has marks the reference field (drawn once its tab shows)
MARK_MISSING_JS = f"""() => {{
  if (!document.querySelector('#pnginfo-report')?.textContent.includes('{MISSING}')) return;
  let tries = 0;
  const mark = () => {{
    const field = document.getElementById('vl-references');
    if (field) field.classList.add('refused'); else if (tries++ < 40) setTimeout(mark, 50);
  }};
  mark();
}}"""


@dataclass
class PngInfo:
    file: gr.File
    preview: gr.Image
    report: gr.Markdown
    load: gr.Button
    as_init: gr.Button  # the PNG itself as img2img's init image
    raw: gr.JSON


def read(path: str) -> tuple[Parameters, str]:
    """The PNG's parameters and the id of the tab they belong to (ValueError: not readable)."""
    params = read_parameters(path)
    return params, TABS.get(params.mode, "txt2img")


def report(params: Parameters) -> str:
    """What was read, the settings that matter most at a glance, and what cannot be used."""
    v = params.values
    glance = [f"prompt “{v['prompt'][:200]}”" if v.get("prompt") else "no prompt"]
    if "width" in v and "height" in v:
        glance.append(f"{v['width']}×{v['height']}")
    glance += [f"{label} {v[key]}" for key, label in (("num_inference_steps", "steps"), ("seed", "seed"),
                                                       ("strength", "strength"), ("alpha", "alpha")) if key in v]
    usable = [] if params.unknown or params.problems else ["Everything in it can be used."]
    return "\n\n".join(params.report().split("\n") + usable + [" · ".join(glance)])


def references(params: Parameters, roots: list, max_pixels: int = 0, hosted: bool = False) -> tuple[dict, str]:
    """A VL image's references, found by their recorded sha256 among the files the app still has
    (`roots`: the output folder and gradio's upload cache, where the history's files lie too): the
    image inputs to restore, and what the report adds. All or none are loaded: the weights count them.
    Hosted, nothing is looked up: those folders hold every visitor's files, and a shared output PNG
    would hand its reference (often a private photo) to whoever loads it."""
    if not params.references:
        return {}, ""
    found = {} if hosted else find_images(params.references, roots, params.reference_sizes, max_pixels=max_pixels)
    if len(found) == len(set(params.references)):
        return {"references": [str(found[h]) for h in params.references]}, (
            f"\n\nReference image(s): {len(params.references)} found by their sha256 and loaded.")
    missing = [f"{MISSING} {i + 1} (sha256 {h[:12]}…)" for i, h in enumerate(params.references) if h not in found]
    where = ("this shared server does not look references up among its visitors' files" if hosted else
             "is no longer in the output folder, the history or the upload cache")
    return {}, ("\n\n⚠ " + "; ".join(missing) + f": {where}. Upload it again in **Reference image(s)** on the "
                "VL conditioning tab (the references were left as they were).")


def show_png(path):
    """A dropped PNG: its preview, the report and the button that loads it; nothing is loaded yet."""
    hidden = gr.Button(visible=False)
    if not path:
        return None, "", None, hidden, hidden
    try:
        params, tab = read(path)
    except ValueError as err:
        return None, f"⚠ {err}", None, hidden, hidden
    return (path, report(params), params.values,
            gr.Button(f"Load into {TAB_LABELS[tab]}", visible=True), gr.Button(visible=True))


def build() -> PngInfo:
    with gr.Tab("PNG info", id="pnginfo", elem_id="pnginfo"):
        gr.Markdown("Drop a PNG made by this app, or one with AUTOMATIC1111 `parameters`: its parameters are "
                    "listed here, with anything that cannot be used. **Load into …** puts them into the tab "
                    "that made it; **Use as img2img init image** starts img2img from the picture itself.")
        with gr.Row():
            with gr.Column():
                file = gr.File(label="PNG", file_types=[".png"], type="filepath", elem_id="pnginfo-file", height=120)
                preview = gr.Image(label="Preview", type="filepath", interactive=False, height=420,
                                   elem_id="pnginfo-preview")
            with gr.Column():
                text = gr.Markdown(elem_id="pnginfo-report")
                with gr.Row():
                    load = gr.Button("Load", variant="primary", visible=False, elem_id="pnginfo-load")
                    as_init = gr.Button("Use as img2img init image", visible=False, elem_id="pnginfo-init")
                raw = gr.JSON(label="Metadata found", elem_id="pnginfo-raw")
    file.change(show_png, file, [preview, text, raw, load, as_init], api_name="show_png", api_visibility="private",
                queue=False)
    return PngInfo(file, preview, text, load, as_init, raw)

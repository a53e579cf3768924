"""The generation form and result panel shared by the txt2img, img2img and VL tabs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import gradio as gr

from llm_dit.core.presets import PRESETS_DIR, load_presets, load_resolutions
from llm_dit.core.request import CONTROL_FIELDS

from .common import control, image_input
from .guard import message_box, stop_button
from .preview import prompt_preview
from .preview import wire as wire_preview

FREE_SIZE = "Free size (set width and height)"


@dataclass
class Form:
    controls: dict  # request field -> component
    randomize: gr.Checkbox
    reuse: gr.Button
    reset: gr.Button  # every control and upload of the tab back to its default (ui/keep.py)


@dataclass
class Result:
    image: gr.Image
    seed: gr.Number
    metadata: gr.JSON
    to_img2img: gr.Button
    to_vl: gr.Button
    files: gr.File  # the tab's exports (.safetensors), hidden until there is one
    extra: object = None  # what the tab's `more()` added


@dataclass
class TabParts:
    """What a generating tab exposes for cross-tab wiring (history, send-to, PNG info)."""

    name: str
    controls: dict
    result: Result
    inputs: dict = field(default_factory=dict)  # image inputs: "image", "references", "structure_image"
    event: object = None  # the generate event, to chain history on
    reset: object = None  # the form's "Reset to defaults" button


def size_picker(c: dict, most: tuple[int, int]) -> None:
    """The official Space's resolution presets (tiers × aspect ratios) feeding height/width, those
    the DiT can make (`most`: its largest height and width); the sliders end there too."""
    sizes = {r.label: r for r in load_resolutions() if r.height <= most[0] and r.width <= most[1]}
    picker = gr.Dropdown(choices=[FREE_SIZE] + list(sizes), value="1024×1024 (1:1) · 1024", label="Size preset",
                         info="1024 / 1280 / 1536 tiers, 11 aspect ratios each")
    with gr.Row():
        c["width"], c["height"] = control("width", maximum=most[1]), control("height", maximum=most[0])

    def apply(label):
        r = sizes.get(label)
        return (r.width, r.height) if r else (gr.skip(), gr.skip())

    # The preset that names this size, or free size: the picker never shows a size that will not run.
    # Found in the browser (no round trip): as a server event it was a second `always_last` listener
    # on the size fields, and gradio 6.31 re-dispatches every listener of a trigger when a deferred
    # one ends, so two of them kept re-firing each other (see ui/keep.py).
    match = f"""(width, height, shown) => {{
  const sizes = {json.dumps({label: [r.width, r.height] for label, r in sizes.items()})};
  const same = (label) => sizes[label] && sizes[label][0] === Number(width) && sizes[label][1] === Number(height);
  return same(shown) ? undefined : Object.keys(sizes).find(same) ?? {json.dumps(FREE_SIZE)};
}}"""

    # A person's choice sets the size; the size (typed, restored, from a preset) names its preset.
    # `input`, not `change`: the picker set by `match` does not write the size back (no ping-pong
    # with what is being typed).
    picker.input(apply, picker, [c["width"], c["height"]], api_visibility="private", queue=False)
    gr.on([c["width"].change, c["height"].change], None, [c["width"], c["height"], picker], picker, js=match,
          api_visibility="private", queue=False)


def lora_picker(box, names: list[str]) -> None:
    """A dropdown of the LoRAs the operator offers (--lora-dir); choosing one adds it to the box."""
    if not names:
        return
    pick = gr.Dropdown(choices=names, value=None, label="Add a LoRA", info="offered by this app's LoRA folder")

    def add(name, text):
        if not name:
            return gr.skip(), gr.skip()
        lines = [line for line in (text or "").splitlines() if line.strip()]
        return "\n".join(lines + [f"{name}:1.0"]), None

    pick.input(add, [pick, box], [box, pick], api_visibility="private", queue=False)


def _default(name: str, defaults: dict) -> dict:
    """The checkpoint's own default for a field, where it differs from the declared one."""
    return {"value": defaults[name]} if name in defaults else {}


def _control_group(c: dict, studio) -> None:
    """The control image (`c["_control_image"]`, an input of the event, not a request field) and
    the ControlNet's fields."""
    with gr.Accordion("Structure control (ControlNet)", open=False):
        note = "" if studio.settings.controlnet_path else " · this instance has no ControlNet (--controlnet-path)"
        c["_control_image"] = image_input("Control image: its layout (edges, or a ready depth/pose map)" + note)
        with gr.Row():
            for f in CONTROL_FIELDS:
                c[f] = control(f)


def generation_form(fields: list[str], studio, preset_file: str = "generation.toml", main=None,
                    extra=None) -> Form:
    """The controls of a generation tab, the main ones first: the prompt, `main(c)` (the tab's own
    main controls, e.g. strength, added into the same dict), preset and style, size, steps and
    seed; then the research knobs in collapsed accordions, `extra(c)` adding the tab's own groups
    among them."""
    presets = {name: p for name, p in load_presets(PRESETS_DIR / preset_file).items()
               if set(p["values"]) <= set(fields)}
    defaults = studio.manager.request_defaults()  # Z-Image Base: CFG, negative prompt, more steps
    c = {"prompt": control("prompt")}
    preview = prompt_preview()  # under the prompt; wired below, once the fields it reads exist
    if main is not None:
        main(c)
    with gr.Row(equal_height=True):
        picker = gr.Dropdown(choices=list(presets), value=None, label="Preset", min_width=160,
                             info=f"sets several controls at once (presets/{preset_file})")
        c["template"] = control("template", min_width=160)
    note = gr.Markdown(visible=False)  # the chosen preset's description
    size_picker(c, studio.size_limit)
    with gr.Row(equal_height=True):
        for f in ("num_inference_steps", "seed"):
            if f not in c:
                c[f] = control(f, **_default(f, defaults))
        with gr.Column(min_width=120, scale=0):
            randomize = gr.Checkbox(label="Random seed", value=True)
            reuse = gr.Button("♻ Reuse last", size="sm")
            reset = gr.Button("Reset to defaults", size="sm")
    randomize.change(lambda on, seed: -1 if on else (0 if seed == -1 else seed), [randomize, c["seed"]],
                     c["seed"], api_visibility="private", queue=False)
    with gr.Accordion("Prompt format (Qwen3 chat)", open=False):
        for f in ("system_prompt", "thinking_content", "assistant_content"):
            c[f] = control(f)
        with gr.Row():
            for f in ("force_think_block", "strip_quotes"):
                c[f] = control(f)
        with gr.Row():
            for f in ("hidden_layer", "long_prompt_mode"):
                c[f] = control(f)
    wire_preview(preview, c, studio)
    if extra is not None:
        extra(c)
    if "controlnet_conditioning_scale" in fields:
        _control_group(c, studio)
    with gr.Accordion("Sampling, LoRA, attention", open="guidance_scale" in defaults):
        with gr.Row():
            for f in ("shift", "guidance_scale"):
                c[f] = control(f, **_default(f, defaults))
        for f in ("negative_prompt", "loras"):
            c[f] = control(f, hosted=studio.hosted, **_default(f, defaults))
        lora_picker(c["loras"], studio.policy.lora_names())
        c["attention_backend"] = control("attention_backend", hosted=studio.hosted)
    names = [n for n in c if not n.startswith("_")]
    c["_randomize"] = randomize  # a restore writes it too: a restored seed is a fixed seed

    def apply_preset(name):
        if name not in presets:
            return [gr.skip()] * (len(names) + 1)
        values = presets[name]["values"]
        return [gr.Markdown(presets[name]["description"], visible=True)] + [values.get(f, gr.skip()) for f in names]

    picker.change(apply_preset, picker, [note] + [c[f] for f in names], api_visibility="private",
                  queue=False)
    return Form(c, randomize, reuse, reset)


@dataclass
class RunBar:
    buttons: list  # Generate, then the tab's other run buttons
    stop: gr.Button  # shown while one of them runs (ui/guard.py)
    message: gr.Markdown  # a refused click's message


def run_bar(tab: str, *others: tuple[str, str]) -> RunBar:
    """The Generate button (and the tab's other run buttons, as (label, elem_id)) on one row at the
    top of the result column: in view beside the main inputs, above the result, however long the
    form below them is; a Stop beside them while a job runs, a refused click's message under them."""
    with gr.Row(equal_height=True, elem_classes="run-bar"):
        buttons = [gr.Button("Generate", variant="primary", scale=2, elem_id=f"{tab}-generate")]
        for label, elem_id in others:
            buttons.append(gr.Button(label, scale=1, elem_id=elem_id))
        stop = stop_button(f"{tab}-stop")
    return RunBar(buttons, stop, message_box(f"{tab}-refusal"))


RESULT_HEIGHT = 480  # px: with the run bar, readout and an export above it, the result fits a 1000 px window


def result_panel(tab: str, export_label: str = "Prompt embeddings (.safetensors)", more=None) -> Result:
    """The tab's export (hidden until there is one: right under the button that makes it), the result
    image at a fixed height (the page does not jump when it arrives), the seed used and the send-to
    buttons on one row under it, `more()` (the tab's own compact outputs), then the metadata."""
    files = gr.File(label=export_label, visible=False, elem_id=f"{tab}-export")
    image = gr.Image(label="Result", type="filepath", format="png", interactive=False, elem_id=f"{tab}-result",
                     height=RESULT_HEIGHT)
    with gr.Row(equal_height=True):
        # hidden until a run: gradio's Number shows an empty value as 0, a seed that never ran
        seed = gr.Number(label="Seed used", value=None, precision=0, interactive=False, min_width=120, scale=1,
                         visible=False)
        with gr.Column(scale=2, elem_classes="send-to"):
            to_img2img = gr.Button("→ img2img (init image)", size="sm", elem_id=f"{tab}-to-img2img")
            to_vl = gr.Button("→ VL conditioning (reference)", size="sm", elem_id=f"{tab}-to-vl")
    extra = more() if more is not None else None
    metadata = gr.JSON(label="Metadata")
    return Result(image, seed, metadata, to_img2img, to_vl, files, extra)


def reveal_export(event, files: gr.File) -> None:
    """After an export event (whose API output stays the plain file path), show `files` when it
    holds the file, hide it when there is none (the disk refused)."""

    def show_export(path):
        return gr.File(visible=bool(path))

    event.success(show_export, files, files, api_visibility="private", queue=False)


def wire_reuse(form: Form, result: Result) -> None:
    """'Reuse last seed': the seed used goes back into the seed box, randomising off. Before any
    run there is no seed to reuse (the empty box reads as 0): nothing changes."""

    def reuse(used, metadata):
        if not metadata:
            gr.Info("No result yet: generate once, then reuse its seed.")
            return gr.skip(), gr.skip()
        return used, False

    form.reuse.click(reuse, [result.seed, result.metadata], [form.controls["seed"], form.randomize],
                     api_visibility="private", queue=False)

"""The generation form and result panel shared by the txt2img, img2img and VL tabs."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from llm_dit.presets import PRESETS_DIR, load_presets, load_resolutions

from .common import control
from .preview import prompt_preview

FREE_SIZE = "Free size (set width and height)"


@dataclass
class Form:
    controls: dict  # request field -> component
    randomize: gr.Checkbox
    reuse: gr.Button


@dataclass
class Result:
    image: gr.Image
    seed: gr.Number
    metadata: gr.JSON
    to_img2img: gr.Button
    to_vl: gr.Button


@dataclass
class TabParts:
    """What a generating tab exposes for cross-tab wiring (history, send-to, PNG info)."""

    name: str
    controls: dict
    result: Result
    inputs: dict = field(default_factory=dict)  # image inputs: "image", "references", "structure_image"
    event: object = None  # the generate event, to chain history on


def size_picker(c: dict) -> None:
    """The official Space's resolution presets (tiers × aspect ratios) feeding height/width."""
    sizes = {r.label: r for r in load_resolutions()}
    picker = gr.Dropdown(choices=[FREE_SIZE] + list(sizes), value="1024×1024 (1:1) · 1024", label="Size preset",
                         info="1024 / 1280 / 1536 tiers, 11 aspect ratios each")
    with gr.Row():
        c["width"], c["height"] = control("width"), control("height")

    def apply(label):
        r = sizes.get(label)
        return (r.width, r.height) if r else (gr.skip(), gr.skip())

    picker.change(apply, picker, [c["width"], c["height"]], api_visibility="private", queue=False)


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


def generation_form(fields: list[str], studio, preset_file: str = "generation.toml", extra=None) -> Form:
    """The controls of a generation tab, laid out in groups. `extra(c)` may add more controls
    (into the same dict) before the sampling group."""
    presets = {name: p for name, p in load_presets(PRESETS_DIR / preset_file).items()
               if set(p["values"]) <= set(fields)}
    with gr.Row():
        picker = gr.Dropdown(choices=list(presets), value=None, label="Preset", scale=1,
                             info=f"sets several controls at once (presets/{preset_file})")
        note = gr.Markdown()
    c = {"prompt": control("prompt")}
    size_picker(c)
    with gr.Row(equal_height=True):
        c["num_inference_steps"] = control("num_inference_steps")
        c["seed"] = control("seed")
        with gr.Column(min_width=120, scale=0):
            randomize = gr.Checkbox(label="Random seed", value=True)
            reuse = gr.Button("♻ Reuse last", size="sm")
    randomize.change(lambda on, seed: -1 if on else (0 if seed == -1 else seed), [randomize, c["seed"]],
                     c["seed"], api_visibility="private", queue=False)
    if "strength" in fields:
        c["strength"] = control("strength")
    c["template"] = control("template")
    with gr.Accordion("Prompt format (Qwen3 chat)", open=False):
        for f in ("system_prompt", "thinking_content", "assistant_content"):
            c[f] = control(f)
        with gr.Row():
            for f in ("force_think_block", "strip_quotes"):
                c[f] = control(f)
        with gr.Row():
            for f in ("hidden_layer", "long_prompt_mode"):
                c[f] = control(f)
    prompt_preview(c, studio)  # placed under the prompt; reads the fields above
    if extra is not None:
        extra(c)
    with gr.Accordion("Sampling, LoRA, attention", open=False):
        with gr.Row():
            for f in ("shift", "guidance_scale"):
                c[f] = control(f)
        for f in ("negative_prompt", "loras"):
            c[f] = control(f, hosted=studio.hosted)
        lora_picker(c["loras"], studio.policy.lora_names())
        c["attention_backend"] = control("attention_backend", hosted=studio.hosted)
    names = [n for n in c if not n.startswith("_")]
    c["_randomize"] = randomize  # a restore writes it too: a restored seed is a fixed seed

    def apply_preset(name):
        if name not in presets:
            return [gr.skip()] * (len(names) + 1)
        values = presets[name]["values"]
        return [presets[name]["description"]] + [values.get(f, gr.skip()) for f in names]

    picker.change(apply_preset, picker, [note] + [c[f] for f in names], api_visibility="private",
                  queue=False)
    return Form(c, randomize, reuse)


def result_panel(tab: str) -> Result:
    image = gr.Image(label="Result", type="filepath", format="png", interactive=False, elem_id=f"{tab}-result")
    with gr.Row():
        to_img2img = gr.Button("→ img2img (init image)", size="sm", elem_id=f"{tab}-to-img2img")
        to_vl = gr.Button("→ VL conditioning (reference)", size="sm", elem_id=f"{tab}-to-vl")
    seed = gr.Number(label="Seed used", value=None, precision=0, interactive=False)
    metadata = gr.JSON(label="Metadata")
    return Result(image, seed, metadata, to_img2img, to_vl)


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

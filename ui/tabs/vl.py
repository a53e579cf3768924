"""VL conditioning tab: reference image(s) + prompt -> Qwen3-VL extraction -> blend -> DiT."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import quote
from dataclasses import fields
from pathlib import Path

import gradio as gr

from llm_dit.pipelines import recipe
from llm_dit.pipelines.control import check_inputs

from llm_dit.conditioning import layerscan
from llm_dit.core.images import image_size
from llm_dit.conditioning.vl import check_aspect
from llm_dit.core.request import VLRequest, field_meta, parse_weights, validate
from llm_dit.serving.budgets import MAX_REFERENCES

from ..common import Endpoint, control, image_input, saved
from ..guard import message_box, stop_button
from ..form import TabParts, generation_form, result_panel, run_bar, reveal_export, wire_reuse
from ..gpu import gpu_seconds, on_gpu
from ..studio import GPU
from .img2img import READOUT, strength_readout, wire_strength_readout

FIELDS = [f.name for f in fields(VLRequest)]
# The research knobs, one collapsed accordion per group (the main ones, alpha and strength, sit
# under the prompt).
EXTRACTION = ["vl_use_prompt", "vl_text", "vl_system_prompt", "vl_think_block", "vl_hidden_layer",
              "vl_text_hidden_layer", "token_mode"]  # what Qwen3-VL reads, and which states are taken
COMPOSITION = ["vl_composition", "image_text_ratio", "reference_weights"]  # image vs text parts, references
BLEND = ["blend_mode", "concat_tokens", "length_mode", "vl_start", "vl_end"]  # how and when VL mixes in
STATISTICS = ["scale_to_text", "target_std", "normalization", "outlier_mode", "outlier_threshold"]
GROUPS = {"VL extraction (Qwen3-VL)": EXTRACTION, "Composition (image vs text, several references)": COMPOSITION,
          "Blend (mode, length, step window)": BLEND, "Statistics and normalisation": STATISTICS}
DEPENDENT = EXTRACTION + COMPOSITION + BLEND + STATISTICS + ["hidden_layer"]
# Controls whose value decides which other controls apply (recipe.inactive_fields).
GOVERNING = ["alpha", "vl_use_prompt", "vl_composition", "token_mode", "scale_to_text", "normalization",
             "outlier_mode", "blend_mode", "guidance_scale", "target_std"]


def alpha_readout(report: dict | None, alpha: float) -> str:
    if not report:
        return f"alpha {alpha:.2f} · the VL share appears after a first extraction"
    share = report["effective_alpha"]
    low, high = report.get("effective_alpha_range", [share, share])
    return (f"alpha {alpha:.2f} · **VL share {share:.3f}** (per token {low:.3f} to {high:.3f}): how much of "
            f"each caption token the DiT receives from VL, after its RMSNorm")


def applicable(request: VLRequest) -> list:
    """One update per control in `recipe.inactive_fields`' reach: greyed out, with the
    reason as its info, when it cannot change this request's result."""
    off = recipe.inactive_fields(request)
    return [gr.update(interactive=name not in off, info=off.get(name, field_meta(name)["info"] or None))
            for name in DEPENDENT]


def token_map(report: dict) -> str:
    rows = ["| extraction | mode | template | image | markers | text | used | cached |", "|---|---|---|---|---|---|---|---|"]
    for i, ex in enumerate(report["extractions"]):
        t = ex["tokens"]
        rows.append(f"| {i} | {ex['token_mode']} | {t['template']} | {t['image']} | {t['marker']} | "
                    f"{t['text']} | {t['selected']} | {'yes' if ex['cached'] else 'no'} |")
    return "\n".join(rows)


def scan_outputs(rows: list[dict], csv_path: str):
    """The layer scan as two line plots (per-dim std correlation, outlier dims), the CSV and a
    one-line suggestion for `vl_hidden_layer`."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=layerscan.COLUMNS)
    best = layerscan.best_layer(rows)
    note = ("no image tokens to rank" if best is None else
            f"image tokens closest to the text encoder's profile with the fewest outlier dims: "
            f"**layer {best}** (set VL hidden layer to use it)")
    return frame, frame, csv_path, note, best


REFERENCES_HEIGHT = 150  # px: the references, the prompt, alpha, strength and the preset fit above the fold


def _references(files) -> list:
    if not files:
        raise ValueError("references: no reference image: upload at least one image.")
    if len(files) > MAX_REFERENCES:
        raise ValueError(f"references: {len(files)} images; at most {MAX_REFERENCES} condition one generation.")
    return [getattr(f, "name", f) for f in files]


def reference_thumbs(files, weights: str) -> list:
    """The references as (image, caption) for the thumbnails: the file name and its weight (the
    weights as they will be used; a list that does not parse says so in its caption)."""
    paths = [getattr(f, "name", f) for f in (files or [])][:MAX_REFERENCES]
    try:
        used = [f"weight {w:g}" for w in parse_weights(weights, len(paths))] if paths else []
    except ValueError:
        used = ["weight ? (see Reference weights)"] * len(paths)
    return [(p, f"{Path(p).name} · {w}") for p, w in zip(paths, used)]


def thumbs_html(files, weights: str) -> str:
    """The reference thumbnails as plain images with their captions (served by gradio from its
    upload cache; a gallery re-scrolled the page on each update)."""
    figures = []
    for path, caption in reference_thumbs(files, weights):
        name, _, weight = caption.partition(" · ")  # a line each (the name cut to fit, whole in the title)
        figures.append(f'<figure><img src="gradio_api/file={quote(path)}" alt="{escape(caption)}" '
                       f'title="{escape(caption)}"><figcaption><span>{escape(name)}</span>'
                       f"<span> · {escape(weight)}</span></figcaption></figure>")
    return f'<div class="reference-thumbs">{"".join(figures)}</div>' if figures else ""


def check_images(references, policy) -> None:
    """The references given so far (none is fine here) within the image budget, from their headers."""
    for i, ref in enumerate(_references(references) if references else ()):
        image_size(ref, f"references[{i}]", policy.budgets)


def check(request, references, policy, structure_image=None, control_image=None, mask_image=None) -> None:
    """Before the queue: the request, and references (and structure, control and mask images) that
    open, within the image budget (their headers only: decoded once, in the job)."""
    check_inputs(request.strength < 1.0 or mask_image is not None, control_image, mask_image, request.strength)
    validate(request, img2img=request.strength < 1.0, policy=policy)
    refs = _references(references)
    parse_weights(request.reference_weights, len(refs))
    for i, ref in enumerate(refs):
        check_aspect(image_size(ref, f"references[{i}]", policy.budgets), field=f"references[{i}]")
    for name, image in (("structure_image", structure_image), ("control_image", control_image),
                        ("mask_image", mask_image)):
        if image is not None:
            image_size(image, name, policy.budgets)


def example_reference() -> str:
    """A reference image drawn by the app itself (a sunset over water), for the tab's examples.
    Made in the temp folder, so a read-only output folder does not stop the app from starting."""
    import tempfile

    from PIL import Image, ImageDraw

    path = Path(tempfile.gettempdir()) / "llm_dit-examples" / "sunset-reference.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (512, 512))
        draw = ImageDraw.Draw(image)
        for y in range(512):  # sky from violet to orange, sea below the horizon
            t = y / 300
            color = (int(70 + 180 * t), int(40 + 90 * t), int(120 - 60 * t)) if y < 300 else (20, 40 + (y - 300) // 6, 90)
            draw.line([(0, y), (512, y)], fill=color)
        draw.ellipse([196, 210, 316, 330], fill=(255, 210, 120))
        draw.rectangle([0, 300, 512, 512], fill=(25, 45, 95))
        for y in range(310, 512, 14):
            draw.line([(236 - (y - 300) // 3, y), (276 + (y - 300) // 3, y)], fill=(230, 150, 90), width=3)
        image.save(path)
    return str(path)


def build(studio) -> TabParts:
    manager = studio.manager
    gpu_vl = on_gpu(lambda request, refs, structure, control, mask: recipe.vl_generate(
                        manager, request, refs, structure, control, mask),
                    duration=lambda request, refs, *images: gpu_seconds(request, extractions=2 * len(refs)))
    gpu_scan = on_gpu(lambda image, params, layer, threshold: layerscan.scan(manager, image, params, layer, threshold),
                      duration=lambda *args: gpu_seconds(None, extractions=2))
    gpu_condition = on_gpu(lambda request, refs: recipe.condition(manager, request, refs),
                           duration=lambda request, refs: gpu_seconds(None, extractions=2 * len(refs)))

    def main(c):
        with gr.Row():
            c["alpha"], c["strength"] = control("alpha"), control("strength")

    def extras(c):
        for label, names in GROUPS.items():
            with gr.Accordion(label, open=False):
                for f in names:
                    c[f] = control(f)

    def diagnostics():
        """Under the result, before the (long) metadata: the token map, then the statistics and the
        layer scan, collapsed."""
        tokens = gr.Markdown(elem_id="vl-token-map")
        with gr.Accordion("Statistics and effective alpha", open=False):
            stats = gr.JSON(label="Statistics and effective alpha")
        with gr.Accordion("Layer scan (one VL forward, every hidden layer)", open=False):
            with gr.Row(equal_height=True):
                scan_button = gr.Button("Scan layers of the first reference", elem_id="vl-layer-scan", scale=2)
                scan_stop = stop_button("vl-layer-scan-stop")
            scan_message = message_box("vl-layer-scan-refusal")
            scan_note = gr.Markdown()
            corr_plot = gr.LinePlot(x="layer", y="std_correlation", color="tokens",
                                    title="per-dim std correlation with the text encoder")
            outlier_plot = gr.LinePlot(x="layer", y="outlier_dims", color="tokens",
                                       title="outlier dims (above the outlier threshold)")
            scan_csv = gr.File(label="Layer scan (.csv)")
            suggested = gr.State(None)
            use_layer = gr.Button("Use the suggested layer", size="sm", elem_id="vl-use-layer")
        return (tokens, stats, (scan_button, scan_stop, scan_message), scan_note, corr_plot, outlier_plot, scan_csv,
                suggested, use_layer)

    with gr.Tab("VL conditioning", id="vl", elem_id="vl"):
        with gr.Row():
            with gr.Column():
                with gr.Row(equal_height=True):
                    references = gr.File(label="Reference image(s)", file_count="multiple", file_types=["image"],
                                         type="filepath", elem_id="vl-references", height=REFERENCES_HEIGHT,
                                         scale=1)
                    # half the row: three thumbnails side by side, more scrolled sideways
                    thumbs = gr.HTML(elem_id="vl-reference-thumbs", scale=1, min_width=200,
                                     max_height=REFERENCES_HEIGHT - 8)
                form = generation_form(FIELDS, studio, preset_file="vl.toml", main=main, extra=extras)
                c = form.controls
                with gr.Accordion("Structure image (optional: init latents instead of the first reference)",
                                  open=False):
                    structure = image_input("Structure image")
                    mask = image_input("Inpaint mask (optional): white is restyled, black kept from the "
                                       "structure image (or the first reference)")
                gr.Examples([[[example_reference()], "A fox on a hill, in the colours of the reference"],
                             [[example_reference()], "A quiet harbour town"]],
                            inputs=[references, c["prompt"]], cache_examples=False)
            with gr.Column():
                bar = run_bar("vl", ("Extract only", "vl-extract"))
                go, extract_button = bar.buttons
                with gr.Group(elem_classes="run-readout"):
                    strength_md = gr.Markdown(strength_readout(*(c[f].value for f in READOUT)),
                                              elem_id="vl-strength-readout")
                    readout = gr.Markdown(alpha_readout(None, 0.3), elem_id="vl-effective-alpha")
                result = result_panel("vl", "Conditioning export (.safetensors)", more=diagnostics)
                export, (tokens, stats, (scan_button, scan_stop, scan_message), scan_note, corr_plot, outlier_plot,
                         scan_csv, suggested,
                         use_layer) = result.files, result.extra

        def generate_action(request, references, structure_image, control_image, mask_image):
            generated = gpu_vl(request, _references(references), structure_image, control_image, mask_image)
            report = generated.metadata["vl"]
            return (*saved(generated, studio), report, token_map(report), alpha_readout(report, request.alpha))

        def extract_action(request, references):
            cond = gpu_condition(request, _references(references))
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-vl-conditioning.safetensors"
            try:
                path = studio.outputs.write(name, lambda tmp: recipe.export(cond, request, tmp))
            except ValueError as err:
                gr.Warning(str(err))
                path = None
            return cond.report, path and str(path), token_map(cond.report), alpha_readout(cond.report, request.alpha)

        def layer_scan_action(request, references):
            first = _references(references)[0]
            params = recipe.extraction_params(request)
            rows = gpu_scan(first, params, request.hidden_layer, request.outlier_threshold)
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-vl-layer-scan.csv"
            try:
                path = studio.outputs.write(name, lambda tmp: Path(tmp).write_text(layerscan.to_csv(rows)))
            except ValueError as err:
                gr.Warning(str(err))
                path = None
            return scan_outputs(rows, path and str(path))

        def preview_action(request, references):
            """Blend-only recompute from cached extractions: never loads the VL model on a slider move."""
            if request.alpha == 0.0:  # the text alone: nothing to compute
                return alpha_readout({"effective_alpha": 0.0, "effective_alpha_range": [0.0, 0.0]}, 0.0)
            try:
                cond = recipe.condition(manager, request, _references(references), cache_only=True)
            except LookupError:
                return alpha_readout(None, request.alpha)
            except ValueError as err:
                return f"⚠ {err}"
            return alpha_readout(cond.report, request.alpha)

        inputs = [c[f] for f in FIELDS]
        generate = Endpoint(studio, "vl_generate", FIELDS, generate_action,
                            ("references", "structure_image", "control_image", "mask_image"), VLRequest, outputs=6,
                            sized=True,
                            check=lambda request, references, structure_image, control_image, mask_image: check(
                                request, references, studio.policy, structure_image, control_image, mask_image))
        event = studio.guards.run(generate, go, [references, structure, c["_control_image"], mask] + inputs,
                                  [result.image, result.seed, result.metadata, stats, tokens, readout],
                                  bar.message, bar.stop, api_name="vl_generate", concurrency_id=GPU)
        extract = Endpoint(studio, "vl_extract", FIELDS, extract_action, ("references",), VLRequest, outputs=4,
                           check=lambda request, references: check(request, references, studio.policy))
        extracted = studio.guards.run(extract, extract_button, [references] + inputs,
                                      [stats, export, tokens, readout], bar.message, bar.stop,
                                      api_name="vl_extract", concurrency_id=GPU)
        reveal_export(extracted, export)
        # it encodes the prompt (cached extractions only): in the GPU group, behind its validator
        # (budgets, pending limits) like every event that touches a model; the references trigger it
        # too: a restore that sets them after alpha leaves no stale "no reference" here
        preview = Endpoint(studio, "vl_preview", FIELDS, on_gpu(preview_action, lambda *a, **k: gpu_seconds(None)),
                           ("references",), VLRequest, check=lambda request, references: check_images(
                               references, studio.policy))
        blend_fields = ["alpha", "image_text_ratio", "reference_weights"] + BLEND + STATISTICS
        for trigger in [references] + [c[f] for f in blend_fields]:
            trigger.change(preview.fn, [references] + inputs, readout, api_visibility="private",
                           concurrency_id=GPU, trigger_mode="always_last", validator=preview.validator)
        scan = Endpoint(studio, "vl_layer_scan", FIELDS, layer_scan_action, ("references",), VLRequest, outputs=5,
                        check=lambda request, references: check(request, references, studio.policy))
        studio.guards.run(scan, scan_button, [references] + inputs,
                          [corr_plot, outlier_plot, scan_csv, scan_note, suggested], scan_message, scan_stop,
                          api_name="vl_layer_scan", concurrency_id=GPU)

        def vl_use_layer(layer):
            return gr.skip() if layer is None else layer

        use_layer.click(vl_use_layer, suggested, c["vl_hidden_layer"], api_name="vl_use_layer",
                        api_visibility="private", queue=False)

        def vl_applicable(*values):
            return applicable(VLRequest(**dict(zip(GOVERNING, values))))

        initial = recipe.inactive_fields(VLRequest())
        for name in DEPENDENT:  # the defaults' state, before any change event
            c[name].interactive = name not in initial
            c[name].info = initial.get(name, c[name].info)
        gr.on([c[f].change for f in GOVERNING], vl_applicable, [c[g] for g in GOVERNING],
              [c[d] for d in DEPENDENT], api_name="vl_applicable", api_visibility="private", queue=False)
        gr.on([references.change, c["reference_weights"].change], thumbs_html,
              [references, c["reference_weights"]], thumbs, api_visibility="private", queue=False)
        wire_strength_readout(c, strength_md)
        wire_reuse(form, result)
    return TabParts("vl", c, result, {"references": references, "structure_image": structure}, event, form.reset)

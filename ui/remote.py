"""API endpoints for splitting across machines: this instance encodes for another.

`encode` (prompt parts -> text embeddings) and `vl_encode` (a reference + extraction parameters ->
VL hidden states) return `.safetensors` files; an instance started with `--text-encoder-url` /
`--vl-url` pointing here calls them instead of loading Qwen3-4B / Qwen3-VL itself. They have no
tab: the controls are hidden and exist to give the endpoints typed, range-checked parameters. A
caller chooses only prompt text, an uploaded image and the declared encoding knobs; files are
written to a private temporary folder of the server.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import gradio as gr

from llm_dit.runtime import remote
from llm_dit.pipelines.recipe import extraction_params
from llm_dit.pipelines.generate import chat_parts, prompt_parts
from llm_dit.core.images import image_size
from llm_dit.core.request import VLRequest, check_field, check_text

from .common import Endpoint, control, image_input
from .gpu import gpu_seconds, on_gpu
from .studio import GPU

ENCODE = ["prompt", "system_prompt", "thinking_content", "assistant_content", "force_think_block", "strip_quotes",
          "template", "hidden_layer", "long_prompt_mode"]
VL_ENCODE = ["vl_text", "vl_system_prompt", "vl_think_block", "vl_hidden_layer", "vl_text_hidden_layer", "token_mode"]
KEPT_FILES = 16  # gradio copies each result into its cache; older originals are deleted


def _pruned(path) -> str:
    """`path`, after deleting all but the newest KEPT_FILES files beside it."""
    files = sorted(Path(path).parent.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    for old in files[:-KEPT_FILES]:
        old.unlink(missing_ok=True)
    return str(path)


def check_encode(request) -> None:
    """Before the queue: the knobs an encoding reads (the prompt may be empty: negative prompts)."""
    check_text(request)  # every text within its declared length
    for name in ("hidden_layer", "long_prompt_mode", "template"):
        check_field(name, getattr(request, name))
    prompt_parts(request)  # an unknown template names itself


def check_vl_encode(request, reference, budgets=None) -> None:
    check_text(request)
    for name in ("token_mode", "vl_hidden_layer", "vl_text_hidden_layer"):
        check_field(name, getattr(request, name))
    if reference is None and not request.vl_text:
        raise ValueError("reference and vl_text are both empty: give an image, some text, or both.")
    if reference is not None:
        image_size(reference, field="reference", budgets=budgets)  # the header only


def build(studio) -> None:
    manager = studio.manager
    folder = tempfile.mkdtemp(prefix="llm_dit-encodings-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # gradio serves its own copies

    def encode_action(request):
        return _pruned(remote.encode_file(manager, chat_parts(request), request.hidden_layer,
                                          request.long_prompt_mode, folder))

    def vl_encode_action(request, reference):
        params = extraction_params(replace(request, vl_use_prompt=False))  # the text is exactly vl_text
        return _pruned(remote.extract_file(manager, reference, params, folder))

    gpu_encode = on_gpu(encode_action, duration=lambda request: gpu_seconds(None))
    gpu_vl_encode = on_gpu(vl_encode_action, duration=lambda request, reference: gpu_seconds(None, extractions=1))
    with gr.Column(visible=False):
        text = {f: control(f, studio.hosted) for f in ENCODE}
        vl = {f: control(f, studio.hosted) for f in VL_ENCODE}
        reference = image_input("Reference")
        result = gr.File()
        encode_button, vl_button = gr.Button(), gr.Button()
    encode = Endpoint(studio, "encode", ENCODE, gpu_encode, check=check_encode)
    encode_button.click(encode.fn, [text[f] for f in ENCODE], result, api_name="encode", concurrency_id=GPU,
                        validator=encode.validator)
    vl_encode = Endpoint(studio, "vl_encode", VL_ENCODE, gpu_vl_encode, ("reference",), VLRequest,
                         check=lambda request, reference: check_vl_encode(request, reference, studio.policy.budgets))
    vl_button.click(vl_encode.fn, [reference] + [vl[f] for f in VL_ENCODE], result, api_name="vl_encode",
                    concurrency_id=GPU, validator=vl_encode.validator)

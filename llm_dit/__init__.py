"""llm_dit: a compact Z-Image pipeline package with prompt control and Qwen3-VL conditioning.

It knows nothing of gradio; `ui/` and `app.py` build the web app on top of it. The rooms, lowest
first (each may import only the rooms listed before it; `tests/test_layers.py` keeps it so):

    serving/       hosting policy, cancellation, timelines, output folder, HTTP client
    core/          request declarations, prompts and templates, text encoding, images, PNG info
    conditioning/  Qwen3-VL extraction, the blend, the layer scan
    runtime/       settings, the model manager, memory plan and levers, downloads, tiny models
    pipelines/     txt2img / img2img, the VL recipe, token preview, prompt rewriting
    studies/       sweeps, grids, metrics, accelerate distribution
    cli.py, bench.py, bench_memory.py, gpu_proof.py: the entry points, above every room

The names most scripts need are importable from here (`from llm_dit import ModelManager, ...`);
they load on first use, so `import llm_dit` stays cheap.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "GenerationRequest": "core.request", "VLRequest": "core.request", "RewriteRequest": "core.request",
    "validate": "core.request", "request_from_png": "core.pnginfo",
    "Settings": "runtime.settings", "ModelManager": "runtime.models",
    "txt2img": "pipelines.generate", "img2img": "pipelines.generate", "vl_generate": "pipelines.recipe",
    "rewrite": "pipelines.rewrite", "SweepSpec": "studies.compare", "run_sweep": "studies.compare",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llm_dit' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)

"""The one request object of a generation: diffusers' argument names, ranges and defaults.

Ranges and defaults are declared here once (in each field's metadata); the UI builds its controls
from them and `validate` enforces them, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

# the long-prompt modes of `llm_dit.core.sequence.resample` (declared here: the request needs no torch)
RESAMPLE_MODES = ("truncate", "interpolate", "pool", "attention_pool")

# the blend's choices (`blend.py` checks them; the request declares them)
LENGTH_MODES = ("interpolate", "truncate", "pool")
NORMALIZATIONS = ("global", "per_dim", "hybrid")
OUTLIER_MODES = ("none", "zero", "clamp", "scale")
BLEND_MODES = ("linear", "linear_rms", "adain", "adain_per_dim", "style_delta", "concat")

CONTROL_PREPROCESS = ("canny", "none")  # the union ControlNet reads any map; canny is made here
CONTROL_FIELDS = ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                  "control_preprocess")  # used only with a control image (txt2img, VL at strength 1)

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds
TEXT_MAX_CHARS = 4000  # any text field but the prompt (checked before the queue)


def _f(default, label, info="", **meta):
    return field(default=default, metadata={"label": label, "info": info, **meta})


@dataclass
class GenerationRequest:
    prompt: str = _f("", "Prompt", max_chars=8000, max_tokens=4096)  # tokens: checked after tokenising
    negative_prompt: str = _f("", "Negative prompt", "used only when guidance_scale > 0")
    system_prompt: str = _f("", "System prompt")
    thinking_content: str = _f("", "Thinking content", "text inside <think>…</think>")
    assistant_content: str = _f("", "Assistant content", "text after the think block")
    force_think_block: bool = _f(False, "Force think block", "add an empty <think></think> block")
    strip_quotes: bool = _f(False, "Strip quotes", 'remove " from the prompt (Z-Image draws them)')
    template: str = _f("", "Style template", "a system prompt from templates/ (your own parts win)")
    hidden_layer: int = _f(-2, "Text encoder hidden layer", "hidden_states index; Z-Image uses -2",
                           minimum=-37, maximum=-1, step=1)
    long_prompt_mode: str = _f("interpolate", "Long prompt mode", "past the caption limit",
                               choices=RESAMPLE_MODES)
    height: int = _f(1024, "Height", "multiple of 16", minimum=64, maximum=4096, step=16)
    width: int = _f(1024, "Width", "multiple of 16", minimum=64, maximum=4096, step=16)
    num_inference_steps: int = _f(8, "Steps", "DiT forwards; Turbo uses 8", minimum=1, maximum=100, step=1)
    guidance_scale: float = _f(0.0, "Guidance scale", "0 for Turbo (distilled)", minimum=0.0,
                               maximum=20.0, step=0.5)
    seed: int = _f(-1, "Seed", "-1 draws a random seed", minimum=-1, maximum=SEED_MAX)
    shift: float = _f(3.0, "Shift", "sigma schedule shift; Turbo uses 3.0", minimum=0.1, maximum=20.0,
                      step=0.1)
    strength: float = _f(0.9, "Strength", "img2img: runs int(steps × strength) forwards", minimum=0.0,
                         maximum=1.0, step=0.01)
    loras: str = _f("", "LoRAs", "one per line: a name from the LoRA folder (or, locally, a .safetensors path), "
                    "optionally :scale")
    attention_backend: str = _f("native", "Attention backend", "diffusers set_attention_backend")
    # structure control (--controlnet-path): used only when a control image is given
    controlnet_conditioning_scale: float = _f(0.75, "ControlNet scale", "how strongly the control image sets the "
                                              "layout; 0 = as without ControlNet", minimum=0.0, maximum=2.0, step=0.05)
    control_guidance_start: float = _f(0.0, "Control from", "fraction of the steps run where the ControlNet starts",
                                       minimum=0.0, maximum=1.0, step=0.05)
    control_guidance_end: float = _f(1.0, "Control until", "fraction of the steps run where the ControlNet ends",
                                     minimum=0.0, maximum=1.0, step=0.05)
    control_preprocess: str = _f("canny", "Control preprocessing", "canny: the edges of the control image; none: "
                                 "it already is a control map (depth, pose, ...)", choices=CONTROL_PREPROCESS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> tuple["GenerationRequest", dict]:
        """A request from a dict, and the entries that are not request fields."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known), {k: v for k, v in data.items() if k not in names}


TOKEN_MODES = ("full", "image_only", "image_no_markers", "text_only")
COMPOSITIONS = ("extraction", "intra_vl", "dual")


@dataclass
class VLRequest(GenerationRequest):
    """A generation conditioned on reference image(s) through Qwen3-VL (BRIEF §4-§6)."""

    vl_use_prompt: bool = _f(True, "Give VL the prompt", "else the VL text below (may be empty)")
    vl_text: str = _f("", "VL text", "what Qwen3-VL reads beside the image when not the prompt")
    vl_system_prompt: str = _f("", "VL system prompt")
    vl_think_block: bool = _f(False, "VL think block", "inject an empty <think></think> after the prompt")
    vl_hidden_layer: int = _f(-6, "VL hidden layer", "hidden_states index for image tokens (and all, by default)",
                              minimum=-37, maximum=-1, step=1)
    vl_text_hidden_layer: int = _f(0, "VL text-token layer", "0 = same as the VL hidden layer",
                                   minimum=-37, maximum=0, step=1)
    token_mode: str = _f("full", "Token selection", "which VL tokens condition the DiT", choices=TOKEN_MODES)
    vl_composition: str = _f("extraction", "VL composition",
                             "extraction: the selected tokens; intra_vl: image part vs text part of one "
                             "extraction; dual: image-only extraction vs text-only extraction",
                             choices=COMPOSITIONS)
    image_text_ratio: float = _f(0.5, "Image/text ratio", "intra_vl and dual: weight of the image part",
                                 minimum=0.0, maximum=1.0, step=0.05)
    reference_weights: str = _f("", "Reference weights", "comma-separated, one per reference (default equal)")
    alpha: float = _f(0.3, "Alpha", "0 = pure text, 1 = pure VL", minimum=0.0, maximum=1.0, step=0.05)
    blend_mode: str = _f("linear", "Blend mode", "how VL mixes into the text embeddings", choices=BLEND_MODES)
    concat_tokens: int = _f(0, "Concat tokens", "blend_mode concat: VL tokens appended after the text, "
                            "resampled by the length alignment (0 = all that fit)", minimum=0, maximum=4096, step=1)
    vl_start: float = _f(0.0, "VL from", "fraction of the steps run where the blend starts (text only before)",
                         minimum=0.0, maximum=1.0, step=0.05)
    vl_end: float = _f(1.0, "VL until", "fraction of the steps run where the blend ends (text only after)",
                       minimum=0.0, maximum=1.0, step=0.05)
    length_mode: str = _f("interpolate", "Length alignment", "VL sequence to the text's length",
                          choices=LENGTH_MODES)
    scale_to_text: bool = _f(True, "Scale VL to text", "match the text embeddings' spread before mixing")
    target_std: float = _f(0.0, "Target std", "0 = the text embeddings' std", minimum=0.0, maximum=1000.0,
                           step=0.5)
    normalization: str = _f("global", "Normalisation", "global, per_dim (text encoder profile) or both",
                            choices=NORMALIZATIONS)
    outlier_mode: str = _f("none", "Outlier dims", "tame dims far more spread than the text encoder's",
                           choices=OUTLIER_MODES)
    outlier_threshold: float = _f(10.0, "Outlier threshold", "relative per-dim std ratio", minimum=1.0,
                                  maximum=1000.0, step=0.5)


REWRITE_BACKENDS = ("qwen3", "qwen3_vl", "openai")
# BRIEF §7: Qwen3 sampling presets; never greedy (it loops).
SAMPLING_PRESETS = {
    "thinking": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0},
    "instruct": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0},
}


@dataclass
class RewriteRequest:
    """A prompt rewrite: a rewriter template, a backend and its sampling settings."""

    prompt: str = _f("", "Prompt to rewrite", max_chars=8000)
    template: str = _f("Concise expander", "Rewriter template")
    backend: str = _f("qwen3", "Backend", "qwen3: the loaded text encoder; qwen3_vl: the VL model (can see "
                      "an image); openai: any OpenAI-compatible server", choices=REWRITE_BACKENDS)
    thinking: bool = _f(False, "Thinking mode", "let Qwen3 think first (its <think> part is removed)")
    temperature: float = _f(0.7, "Temperature", "0.6 thinking / 0.7 instruct; never greedy",
                            minimum=0.05, maximum=2.0, step=0.05)
    top_p: float = _f(0.8, "top_p", "0.95 thinking / 0.8 instruct", minimum=0.05, maximum=1.0, step=0.05)
    top_k: int = _f(20, "top_k", "0 = off", minimum=0, maximum=200, step=1)
    min_p: float = _f(0.0, "min_p", minimum=0.0, maximum=1.0, step=0.01)
    max_new_tokens: int = _f(512, "Max new tokens", minimum=16, maximum=4096, step=16)
    seed: int = _f(-1, "Seed", "-1 draws a random seed", minimum=-1, maximum=SEED_MAX)
    server: str = _f("", "Server", "an OpenAI-compatible server the operator configured (--rewrite-servers)")
    model: str = _f("", "Server model", "the model name the server expects")
    base_url: str = _f("", "Server base URL (local only)", "any OpenAI-compatible URL: vLLM, Ollama "
                       "(…:11434/v1), llama.cpp server; not on a hosted app")
    api_key_env: str = _f("", "API key variable (local only)", "environment variable holding the key; "
                          "not on a hosted app")
    timeout: float = _f(60.0, "Timeout (s)", "total time for the whole reply", minimum=1.0, maximum=600.0,
                        step=1.0)

    def with_preset(self, name: str) -> "RewriteRequest":
        """The same request with the thinking or instruct sampling preset applied."""
        return replace(self, thinking=name == "thinking", **SAMPLING_PRESETS[name])


def field_meta(name: str) -> dict:
    """Default, label, info and range of a request field (for building UI controls)."""
    f = next((f for cls in (VLRequest, RewriteRequest) for f in fields(cls) if f.name == name), None)
    if f is None:
        raise ValueError(f"{name!r} is not a request field: see llm_dit/core/request.py for the fields.")
    return {"default": f.default, **f.metadata}


def field_help(name: str, cls: type | None = None) -> str:
    """One line describing a field of `cls` (default: the generation requests): label, info, choices
    or range, default. The CLI's help and the API's docstrings both read it."""
    if cls is None:
        meta = field_meta(name)
    else:
        f = next(f for f in fields(cls) if f.name == name)
        meta = {"default": f.default, **f.metadata}
    text = meta["label"] + (f": {meta['info']}" if meta["info"] else "")
    if "choices" in meta:
        text += f"; one of {', '.join(meta['choices'])}"
    elif "minimum" in meta:
        text += f"; {meta['minimum']} to {meta['maximum']}"
    return f"{text}; default {meta['default']!r}"


def parse_weights(text: str, count: int) -> list[float]:
    """`reference_weights` -> one non-negative weight per reference (equal when empty)."""
    if not str(text).strip():
        return [1.0] * count
    try:
        weights = [float(w) for w in str(text).replace(";", ",").split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"reference_weights={text!r} is not a list of numbers: e.g. '1, 0.5'.") from None
    if len(weights) != count:
        raise ValueError(f"reference_weights={text!r} has {len(weights)} values for {count} reference(s): give one each.")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"reference_weights={text!r}: weights must be ≥ 0 and not all 0.")
    return weights


def _range_error(name, value, meta, extra=""):
    return ValueError(
        f"{name}={value!r} is out of range: use a value from {meta['minimum']} to {meta['maximum']}{extra}."
    )


def _check_int(name: str, value, extra: str = "") -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer: give a whole number{extra}.")
    meta = field_meta(name)
    if "minimum" in meta and not meta["minimum"] <= value <= meta["maximum"]:
        raise _range_error(name, value, meta, extra)
    return value


def _check_float(name: str, value, extra: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is not a number{extra}.")
    meta = field_meta(name)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number: use a value from {meta['minimum']} to "
                         f"{meta['maximum']}{extra}.")
    if not meta["minimum"] <= value <= meta["maximum"]:
        raise _range_error(name, value, meta, extra)
    return float(value)


def check_number(name: str, value):
    """Range-check one numeric field with the same message `validate` gives."""
    if isinstance(field_meta(name)["default"], int):
        return _check_int(name, value)
    return _check_float(name, value)


def to_number(raw, kind: type):
    """`raw` (text or number) as int or float; ints parse exactly (no float round trip)."""
    if kind is int:
        try:
            return int(str(raw).strip())
        except ValueError:
            value = float(raw)
            if not value.is_integer():
                raise ValueError(f"{raw!r} is not a whole number") from None
            return int(value)
    return float(raw)


def check_field(name: str, value):
    """`value` if it fits the field's type, choices and range; else a ValueError saying why."""
    meta = field_meta(name)
    default = meta["default"]
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(meta['choices'])}.")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not true/false.")
    elif isinstance(default, (int, float)):
        if name == "seed" and value == -1:
            return value
        return check_number(name, value)
    elif not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is not text.")
    return value


def check_text(request) -> None:
    """Every text field is text within its declared length, every switch true/false (cheap: runs
    before the queue)."""
    for f in fields(request):
        value = getattr(request, f.name)
        if isinstance(f.default, bool) and not isinstance(value, bool):
            raise ValueError(f"{f.name}={value!r} is not true/false.")
        if not isinstance(f.default, str):
            continue
        if not isinstance(value, str):
            raise ValueError(f"{f.name}={value!r} is not text.")
        most = f.metadata.get("max_chars", TEXT_MAX_CHARS)
        if len(value) > most:
            raise ValueError(f"{f.name} is {len(value):,} characters long: the limit is {most:,}; shorten it.")


def parse_loras(text: str, lora_path=None) -> list[tuple[str, float]]:
    """`entry` or `entry:scale` lines (or comma-separated) -> [(file path, scale)]. `lora_path`
    turns an entry into a file path or raises (the hosting policy's `lora_path`)."""
    from ..serving.policy import Policy

    lora_path = lora_path or Policy(hosted=False, reason="").lora_path
    entries = []
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item:
            continue
        path, scale = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and head:
            try:
                path, scale = head.strip(), float(tail)
            except ValueError:
                path = item  # a colon inside the path (e.g. C:\...), no scale given
        if not -10.0 <= scale <= 10.0:
            raise ValueError(f"loras: scale {scale} for {path!r} is out of range: use -10 to 10.")
        entries.append((lora_path(path), scale))
    return entries


def strength_forwards(num_inference_steps: int, strength: float) -> int:
    """DiT forwards an img2img run makes (BRIEF §6): int(N × s), robust to float error."""
    return int(num_inference_steps * strength + 1e-9)


def scheduled_steps(forwards: int, start: float = 0.0, end: float = 1.0) -> list[int]:
    """The steps (0-based, of the `forwards` that run) at fractions i/forwards in [start, end)."""
    return [i for i in range(forwards) if start <= i / forwards < end]


def validate(request: GenerationRequest, img2img: bool = False, policy=None) -> GenerationRequest:
    """Check every field; raise ValueError naming the field, the value and the fix. Cheap (no
    model, no file read beyond templates): it runs before a request may queue. `policy` (the
    hosting policy) decides which LoRAs and attention backends a client may name, and the budgets."""
    from .attention import attention_backends
    from ..serving.policy import Policy

    policy = policy or Policy(hosted=False, reason="")
    check_text(request)
    if not request.prompt.strip():
        raise ValueError("prompt is empty: describe the image you want.")
    sizes = {name: _check_int(name, getattr(request, name)) for name in ("height", "width")}
    off = {name: value for name, value in sizes.items() if value % 16}
    if len(off) == 2:  # both: one message naming both, with the nearest size that runs
        near = [max(64, round(value / 16) * 16) for value in sizes.values()]
        raise ValueError(f"height={sizes['height']} and width={sizes['width']} are not multiples of 16: "
                         f"the nearest valid size is {near[0]}×{near[1]} (height×width).")
    for name, value in off.items():
        lower, upper = value - value % 16, value - value % 16 + 16
        raise ValueError(f"{name}={value} is not a multiple of 16: use {lower} or {upper}.")
    _check_int("num_inference_steps", request.num_inference_steps, " (Turbo uses 8)")
    _check_float("guidance_scale", request.guidance_scale, " (Turbo uses 0)")
    seed = request.seed
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not -1 <= seed <= SEED_MAX:
        raise ValueError(f"seed={request.seed!r} is out of range: use -1 (random) or 0 to 2**64-1.")
    _check_float("shift", request.shift, " (Turbo uses 3.0)")
    _check_int("hidden_layer", request.hidden_layer)
    if request.long_prompt_mode not in RESAMPLE_MODES:
        raise ValueError(
            f"long_prompt_mode={request.long_prompt_mode!r} is unknown: use one of {', '.join(RESAMPLE_MODES)}."
        )
    _check_float("strength", request.strength)
    if img2img:
        if strength_forwards(request.num_inference_steps, request.strength) < 1:
            need = 1 / request.num_inference_steps
            raise ValueError(
                f"strength={request.strength} with num_inference_steps={request.num_inference_steps} "
                f"runs int({request.num_inference_steps} × {request.strength}) = 0 DiT forwards: "
                f"use strength ≥ {need:.3f} or more steps."
            )
    for name in ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end"):
        _check_float(name, getattr(request, name))
    if request.control_preprocess not in CONTROL_PREPROCESS:
        raise ValueError(f"control_preprocess={request.control_preprocess!r} is unknown: use one of "
                         f"{', '.join(CONTROL_PREPROCESS)}.")
    parse_loras(request.loras, policy.lora_path)
    backends = attention_backends(hosted=policy.hosted)
    if request.attention_backend not in backends:
        raise ValueError(f"attention_backend={request.attention_backend!r} cannot run here: use one of "
                         f"{', '.join(backends)}.")
    if request.template:
        from .templates import get_template

        get_template(request.template, "style")
    if isinstance(request, VLRequest):
        _validate_vl(request)
    policy.budgets.check_request(request)  # the operator's budgets: size, steps, work
    return request


def _validate_vl(request: VLRequest) -> None:
    for name in ("token_mode", "vl_composition", "blend_mode", "length_mode", "normalization", "outlier_mode"):
        choices = field_meta(name)["choices"]
        if getattr(request, name) not in choices:
            raise ValueError(f"{name}={getattr(request, name)!r} is unknown: use one of {', '.join(choices)}.")
    _check_int("vl_hidden_layer", request.vl_hidden_layer)
    _check_int("vl_text_hidden_layer", request.vl_text_hidden_layer)
    _check_int("concat_tokens", request.concat_tokens)
    for name in ("image_text_ratio", "alpha", "target_std", "outlier_threshold", "vl_start", "vl_end"):
        _check_float(name, getattr(request, name))
    if request.vl_start >= request.vl_end:
        raise ValueError(f"vl_start={request.vl_start} is not before vl_end={request.vl_end}: the blend needs "
                         f"a window, e.g. vl_start=0, vl_end=1 (every step).")
    no_text = not request.vl_use_prompt and not request.vl_text.strip()
    if no_text and request.token_mode == "text_only" and request.vl_composition == "extraction":
        raise ValueError("token_mode='text_only' with no VL text leaves nothing to extract: "
                         "give vl_text, or let VL read the prompt (vl_use_prompt).")
    if no_text and request.vl_composition == "dual":
        raise ValueError("vl_composition='dual' needs text for its content extraction, but VL gets none: "
                         "give vl_text, or let VL read the prompt (vl_use_prompt).")


def validate_rewrite(request: RewriteRequest, has_image: bool, policy=None) -> RewriteRequest:
    from ..serving.policy import Policy
    from .templates import get_template

    policy = policy or Policy(hosted=False, reason="")
    check_text(request)
    if not str(request.prompt).strip() and not (has_image and request.backend != "qwen3"):
        raise ValueError("prompt is empty: give a short idea to expand (or an image, with qwen3_vl/openai).")
    if request.backend not in REWRITE_BACKENDS:
        raise ValueError(f"backend={request.backend!r} is unknown: use one of {', '.join(REWRITE_BACKENDS)}.")
    get_template(request.template, "rewriter")
    if has_image and request.backend == "qwen3":
        raise ValueError("image: the qwen3 backend reads text only: use qwen3_vl, or an OpenAI-compatible "
                         "server with a vision model, or remove the image.")
    for name in ("temperature", "top_p", "min_p", "timeout"):
        _check_float(name, getattr(request, name))
    for name in ("top_k", "max_new_tokens"):
        _check_int(name, getattr(request, name))
    seed = request.seed
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not -1 <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed!r} is out of range: use -1 (random) or 0 to 2**64-1.")
    policy.check_rewrite_fields(request.base_url, request.api_key_env)
    if request.backend == "openai":
        if not str(request.model).strip():
            raise ValueError("model is empty: name the model the server serves (e.g. qwen3:8b for Ollama).")
        url, _, _ = policy.rewrite_target(request.server, request.base_url, request.api_key_env, request.model)
        check_url(url)
    return request


def check_url(url: str) -> str:
    """An http(s) URL with a host, or a ValueError naming base_url."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as err:
        raise ValueError(f"base_url={url!r} is not a valid URL ({err}): e.g. http://127.0.0.1:8000/v1.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url={url!r} is not an http(s) URL with a host: e.g. http://127.0.0.1:8000/v1.")
    return url

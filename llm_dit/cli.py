"""The command line: `llm-dit generate | img2img | vl | extract | sweep | study | rewrite | info`.

Every request flag is made from a request dataclass field (its name, type, choices, range and
default, as declared in `request.py`), and the settings flags are the app's own (`settings.py`), so
there is no second list to keep in sync. A flag left out keeps the field's default, or the value
read from `--from-png`. Progress bars go to stderr, one JSON summary to stdout. Exit codes: 0 done,
2 bad input (the same messages the app shows), 1 a failure (a model that cannot load, an
unreachable remote encoder, a crash).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from . import __version__
from .core.request import GenerationRequest, RewriteRequest, VLRequest, field_help, to_number
from .runtime.settings import add_arguments, settings_from_args
from .serving.logs import quiet_imports

DESCRIPTIONS = {
    "generate": "txt2img: a prompt -> an image (PNG with its parameters, in --output-dir)",
    "img2img": "an init image + a prompt -> an image",
    "vl": "VL conditioning: reference image(s) + a prompt -> Qwen3-VL extraction -> blend -> image",
    "extract": "VL conditioning without the DiT: the blended prompt embeddings as .safetensors",
    "sweep": "a comparison sweep over up to three axes -> labelled grids, cell PNGs, a table "
             "(several processes with `accelerate launch -m llm_dit sweep ...`)",
    "study": "a study file (TOML: references × axes × seeds) -> a study folder that `datasets` loads "
             "(imagefolder), with summary.csv, grids and plots: `study run FILE --output-dir DIR`, "
             "`study resume DIR`, `study rerun DIR --cell N`, `study plot DIR`",
    "scan": "the VL layer scan over many references (files or folders) -> a folder with scan.csv, "
            "scan.json and plots per layer",
    "rewrite": "prompt rewriting with a rewriter template (local Qwen3 / Qwen3-VL, or an OpenAI-compatible server)",
    "info": "settings, devices, library versions, the models in use and what is loaded",
}
# command -> (request class, fields it leaves out)
REQUESTS = {"generate": (GenerationRequest, {"strength"}), "img2img": (GenerationRequest, set()),
            "vl": (VLRequest, set()), "extract": (VLRequest, set()), "sweep": (VLRequest, set()),
            "scan": (VLRequest, set()),
            "rewrite": (RewriteRequest, set())}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _typed(name: str, kind: type):
    """An argparse type that reads `kind` and, when it cannot, says so as `validate` would."""
    def parse(raw: str):
        try:
            return to_number(raw, kind)
        except ValueError:
            what = "an integer: give a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{name}={raw!r} is not {what}.") from None
    parse.__name__ = kind.__name__
    return parse


def add_request_arguments(parser, cls: type, leave_out: set = frozenset()) -> None:
    """One flag per field of the request dataclass `cls`; a flag not given parses as None."""
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in fields(cls):
        if f.name in leave_out:
            continue
        help_text = field_help(f.name, cls).replace("%", "%%")
        if isinstance(f.default, bool):
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(f.default, (int, float)):
            group.add_argument(_flag(f.name), type=_typed(f.name, type(f.default)), default=None,
                               metavar=type(f.default).__name__.upper(), help=help_text)
        else:
            group.add_argument(_flag(f.name), default=None, choices=f.metadata.get("choices"), help=help_text)


def _add_spec_arguments(parser) -> None:
    from .studies.compare import AXES, SweepSpec

    group = parser.add_argument_group("sweep axes (like the Blend comparison tab)")
    for f in fields(SweepSpec):
        choices = list(AXES) + ([""] if f.name[0] in "yz" else []) if f.name.endswith("_axis") else None
        kind = type(f.default) if isinstance(f.default, int) else str
        group.add_argument(_flag(f.name), default=None, choices=choices,
                           type=_typed(f.name, int) if kind is int else str,
                           help=f"default {f.default!r}" + (" (vl_text values: |-separated)" if "values" in f.name else ""))
    group.add_argument("--preset", default=None, help="a study preset from presets/studies/ (its axes and "
                       "base fields; flags given win)")
    group.add_argument("--name", default=None, help="the sweep's study folder, under <output dir>/studies/ "
                       "(default: <time>-sweep)")


def _add_study_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    for action, what in (("run", "run a study file into a new folder (--output-dir; an existing one is refused)"),
                         ("resume", "finish an interrupted study (finished cells are not redone)"),
                         ("rerun", "regenerate one cell into DIR/rerun/ and compare it with the recorded one"),
                         ("plot", "redraw the plots of DIR/summary.csv into DIR/plots/")):
        sub = actions.add_parser(action, help=what, description=what, allow_abbrev=False)
        if action == "run":
            sub.add_argument("file", help="the study file (TOML), e.g. one of presets/studies/")
            sub.add_argument("--references", action="append", metavar="PATH",
                             help="a folder of images, or image files (repeat): instead of the file's references")
            sub.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                             help="a base request field (a TOML value; text may go unquoted), e.g. "
                                  "--set 'prompt=a house by the sea' --set height=512")
        else:
            sub.add_argument("folder", help="the study folder")
        if action == "rerun":
            sub.add_argument("--cell", type=_typed("cell", int), required=True, help="the cell (metadata.jsonl's `cell`)")
        add_arguments(sub.add_argument_group("settings (also from LLM_DIT_* environment variables)"))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. The sweep's axis flags come from the study runner, which imports the whole
    pipeline: they are added only when the command line names `sweep` (or is not given), so
    `--help` and a bad flag of any other command answer at once."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="llm-dit", description="Z-Image VL Studio from the command line. "
                                     "Prints one JSON summary on stdout; exit code 2 = bad input, 1 = failure.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"llm_dit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, description in DESCRIPTIONS.items():
        sub = commands.add_parser(name, help=description, description=description, allow_abbrev=False)
        if name in ("img2img", "rewrite"):
            sub.add_argument("--image", default=None, required=name == "img2img",
                             help="init image" if name == "img2img" else "an image to describe (qwen3_vl, openai)")
        if name in ("vl", "extract", "sweep", "scan"):
            sub.add_argument("--reference", action="append", required=True, metavar="IMAGE",
                             help="reference image (repeat for several)" + (", or a folder of them" if name == "scan" else ""))
        if name in ("vl", "sweep"):
            sub.add_argument("--structure-image", default=None, help="init latents instead of the first reference")
        if name == "extract":
            sub.add_argument("--output", default=None, help="the .safetensors file (default: in --output-dir)")
        if name in ("generate", "vl"):
            sub.add_argument("--control-image", default=None, metavar="IMAGE",
                             help="layout from this image through the ControlNet (--controlnet-path; its canny edges, "
                                  "or itself with --control-preprocess none)")
        if name in ("img2img", "vl"):
            sub.add_argument("--mask-image", default=None, metavar="IMAGE",
                             help="inpaint: redraw the mask's white part of the init (or structure) image, keep the rest")
        if name in ("generate", "img2img", "vl"):
            sub.add_argument("--from-png", default=None, metavar="FILE",
                             help="start from the parameters saved in this PNG (flags given win)")
        if name == "sweep" and "sweep" in argv:
            _add_spec_arguments(sub)
        if name == "study":
            _add_study_arguments(sub)
            continue
        if name in REQUESTS:
            add_request_arguments(sub, *REQUESTS[name])
        add_arguments(sub.add_argument_group("settings (also from LLM_DIT_* environment variables)"))
    return parser


def _request(args, notes: dict, base: dict | None = None, manager=None):
    """The command's request: field defaults < the checkpoint's (Base: CFG, steps) < `base` (a
    preset) < --from-png < flags given."""
    cls, leave_out = REQUESTS[args.command]
    names = {f.name for f in fields(cls)} - leave_out
    defaults = manager.request_defaults() if manager is not None else {}
    values = {k: v for k, v in {**defaults, **(base or {})}.items() if k in names}
    if getattr(args, "from_png", None):
        from .core.pnginfo import read_parameters

        params = read_parameters(args.from_png)
        used = {k: v for k, v in params.values.items() if k in names}
        values.update(used)
        notes["from_png"] = {"file": args.from_png, "mode": params.mode, "used": sorted(used),
                             "not_used": sorted(set(params.values) - set(used)) + sorted(params.unknown),
                             "problems": params.problems}
    values.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    return cls(**values)


def _compare_png(args, manager, notes: dict, references=None, init=None) -> None:
    """With --from-png: warn (stderr, and in the summary) per recorded hash or lever this run differs in."""
    if getattr(args, "from_png", None):
        from .pipelines.provenance import mismatches, recorded

        found = mismatches(recorded(args.from_png), manager, references, init)
        for line in found:
            print(f"llm-dit {args.command}: warning: {line}", file=sys.stderr)
        notes["from_png"]["mismatches"] = found


def _generated(result, settings, notes: dict) -> dict:
    path = result.save(settings.output_dir)
    meta = result.metadata
    return {"image": str(path), "seed": result.seed, "mode": meta["mode"], "forwards": meta["forwards"],
            "timings": meta["timings"], "warnings": meta["warnings"], **notes}


def _generate(args, manager, notes):
    from .pipelines.generate import run

    request = _request(args, notes, manager=manager)
    _compare_png(args, manager, notes, init=args.image if args.command == "img2img" else None)
    result = (run(manager, request, args.image, mask_image=args.mask_image) if args.command == "img2img"
              else run(manager, request, control_image=args.control_image))
    return _generated(result, manager.settings, notes)


def _vl(args, manager, notes):
    from .pipelines.recipe import vl_generate

    request = _request(args, notes, manager=manager)
    init = (args.structure_image or args.reference[0]) if request.strength < 1.0 else None
    _compare_png(args, manager, notes, args.reference, init)
    result = vl_generate(manager, request, args.reference, args.structure_image, args.control_image, args.mask_image)
    summary = _generated(result, manager.settings, notes)
    return {**summary, "effective_alpha": result.metadata["vl"]["effective_alpha"]}


def _extract(args, manager, notes):
    from .pipelines.recipe import condition, export

    request = _request(args, notes)
    cond = condition(manager, request, args.reference)
    output = args.output or Path(manager.settings.output_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-vl-conditioning.safetensors"
    path = export(cond, request, output)
    encoded = cond.encoding.encoded  # the warnings `llm-dit vl` prints about the same conditioning
    warnings = cond.encoding.warnings + ([encoded.describe()] if encoded.long_prompt_applied else [])
    return {"conditioning": str(path), "effective_alpha": cond.report["effective_alpha"],
            "prompt_embeds_shape": list(cond.encoding.prompt_embeds.shape),
            "extractions": cond.report["extractions"], "warnings": warnings, **notes}


def _sweep(args, manager, notes):
    from .studies.compare import SweepSpec, load_sweeps
    from .serving.outputs import STUDIES
    from .studies.distributed import sweep as run_sweep

    spec_values, base = {}, {}
    if args.preset:
        presets = load_sweeps()
        if args.preset not in presets:
            raise ValueError(f"--preset {args.preset!r} is unknown: use one of {', '.join(presets)}.")
        spec_values, base = dict(presets[args.preset]["spec"]), presets[args.preset]["base"]
    for f in fields(SweepSpec):
        if getattr(args, f.name) is not None:
            spec_values[f.name] = getattr(args, f.name)
    spec = SweepSpec(**spec_values)
    stem = args.name or f"{time.strftime('%Y%m%d-%H%M%S')}-sweep"
    folder = Path(manager.settings.output_dir) / STUDIES / stem  # a study folder, listed in the Studies tab
    summary = run_sweep(manager, spec, _request(args, notes, base, manager), args.reference, args.structure_image,
                        str(folder))
    return None if summary is None else {**summary, **notes}


def _fields_of(pairs: list[str]) -> dict:
    """`FIELD=VALUE` pairs: each VALUE read as a TOML value, else as text."""
    import tomllib

    values = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set {pair!r} is not FIELD=VALUE: e.g. --set 'prompt=a house by the sea'.")
        try:
            values[name.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[name.strip()] = raw
    return values


def _study(args, manager, notes):
    from .studies import distributed, runner
    from .studies.study import load_study
    from .studies.summary import plot_summary

    if args.study_command == "run":
        if args.output_dir is None:
            raise ValueError("--output-dir is missing: name the new folder the study writes.")
        study = load_study(args.file, bool(manager.settings.metrics_model), args.references, _fields_of(args.set))
        return distributed.study(manager, args.output_dir, study)
    if args.study_command == "resume":
        return distributed.study(manager, args.folder)
    if args.study_command == "rerun":
        return runner.rerun(manager, args.folder, args.cell)
    runner.read_info(args.folder)
    return {"plots": [str(p) for p in plot_summary(Path(args.folder) / "summary.csv", Path(args.folder) / "plots")]}


def _scan(args, manager, notes):
    from .studies.scan import run_scan

    return {**run_scan(manager, _request(args, notes), args.reference, manager.settings.output_dir), **notes}


def _rewrite(args, manager, notes):
    from .pipelines.rewrite import rewrite

    result = rewrite(manager, _request(args, notes), args.image)
    return {"text": result.text, "seed": result.seed, "metadata": result.metadata}


def _info(args, manager, notes):
    import torch

    from .pipelines.generate import _versions

    devices = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if torch.cuda.is_available():
        devices["cuda_devices"] = [{"name": torch.cuda.get_device_name(i),
                                    "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
                                   for i in range(torch.cuda.device_count())]
    return {"settings": asdict(manager.settings), "hosting": manager.policy.describe(), "devices": devices,
            "versions": _versions(),
            "models": {"z_image": manager.zimage_model_id, "text_encoder": manager.text_encoder_id,
                       "vl": manager.vl_model_id}, "status": manager.status()}


COMMANDS = {"generate": _generate, "img2img": _generate, "vl": _vl, "extract": _extract, "sweep": _sweep,
            "study": _study, "scan": _scan, "rewrite": _rewrite, "info": _info}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)  # bad flags: argparse prints why and exits with 2
    quiet_imports()
    from .runtime.models import ModelManager  # after the flags: --help and a typo need no torch

    try:
        settings = settings_from_args(vars(args))
    except ValueError as err:
        print(f"llm-dit {args.command}: error: {err}", file=sys.stderr)
        return 2
    try:
        # Libraries may print: stdout carries only the JSON summary.
        with contextlib.redirect_stdout(sys.stderr):
            summary = COMMANDS[args.command](args, ModelManager(settings), {})
    except ValueError as err:
        print(f"llm-dit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a failure, not bad input: say what and exit 1
        print(f"llm-dit {args.command}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if summary is not None:  # None: a helper process of a multi-process sweep
        print(json.dumps(summary, indent=2, default=str))
    return 0

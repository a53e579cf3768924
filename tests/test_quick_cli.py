"""`llm-dit --help` and a bad flag answer without importing torch, diffusers or transformers (the
time itself is measured by `python -m llm_dit.bench --cases P8`, not here)."""

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "torchao")
PROBE = """
import contextlib, io, sys
from llm_dit.cli import main
for argv in (["--help"], ["generate", "--no-such-flag"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(",".join(m for m in %r if m in sys.modules))
""" % (HEAVY,)


def test_help_and_a_bad_flag_import_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported for --help or a bad flag: {out.stdout.strip()}"


def test_the_sweep_command_still_lists_its_axis_flags():
    from llm_dit.cli import build_parser

    sweep = build_parser(["sweep"])._subparsers._group_actions[0].choices["sweep"]
    assert "--x-axis" in sweep.format_help()

"""Z-Image VL Studio: settings from flags/env -> Blocks -> launch.  `python app.py --help`"""

import logging
import sys

from llm_dit.serving.logs import quiet_imports

quiet_imports()  # before torch, diffusers and transformers log their import-time noise
from llm_dit.runtime.settings import load_settings  # noqa: E402
from ui import build_demo, launch_options  # noqa: E402


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        options = launch_options(settings)  # a refusal (e.g. MCP on a hosted app) stops here, before any work
    except ValueError as err:
        sys.exit(f"error: {err}")
    demo = build_demo(settings)
    demo.launch(server_name=settings.host or None, server_port=settings.port or None, **options)


if __name__ == "__main__":
    main()

"""Z-Image VL Studio: settings from flags/env -> Blocks -> launch.  `python app.py --help`"""

import logging
import sys

from llm_dit.runtime.settings import load_settings
from ui import build_demo, launch_options


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    demo = build_demo(settings)
    demo.launch(server_name=settings.host or None, server_port=settings.port or None, **launch_options(settings))


if __name__ == "__main__":
    main()

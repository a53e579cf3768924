"""Z-Image VL Studio: settings from flags/env -> Blocks -> launch.  `python app.py --help`"""

import sys

from llm_dit.models import ModelManager
from llm_dit.settings import load_settings
from ui import build_demo


def main(argv=None) -> None:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    manager = ModelManager(settings)
    print("\n".join(manager.memory_plan().lines()), flush=True)  # decided before any model loads
    demo = build_demo(settings, manager)
    demo.launch(server_name=settings.host or None, server_port=settings.port or None)


if __name__ == "__main__":
    main()

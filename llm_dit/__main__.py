"""`python -m llm_dit ...` (and `accelerate launch -m llm_dit sweep ...`): the command line."""

from .cli import main

raise SystemExit(main())

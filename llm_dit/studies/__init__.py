"""Studies: many cells from one specification — study files (study, runner, summary, scan),
sweeps and their grids, image metrics, and their spread over accelerate processes.

May import every room below it (`pipelines` and down).
"""

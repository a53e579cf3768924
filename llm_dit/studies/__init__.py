"""Studies: many cells from one specification — sweeps, grids, image metrics and their spread over
accelerate processes.

May import every room below it (`pipelines` and down).
"""

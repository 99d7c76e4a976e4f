"""Orchestration: ``pipeline.build`` runs the phases; ``preflight`` checks a sample first and names hazards;
``engine``/``parallel``/``ray_engine`` spread pass 1; ``padproc`` runs pass 2 in a process forked at start."""

"""Phase 4, output: what a build says about itself: ``manifest``, ``buildkey``, ``rejects``, ``summary``,
and ``inspection`` (padprep inspect / --verify)."""

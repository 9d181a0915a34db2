"""Run directories, plots and comparison tables."""

"""The version of promptcl, written into every run directory (metrics.json, the checkpoint)."""

__version__ = "0.2.0"

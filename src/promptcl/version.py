"""The version of promptcl, written into every run directory (config.json, the checkpoint,
metrics.json)."""

__version__ = "0.3.0"

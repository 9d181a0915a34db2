from dataclasses import dataclass


@dataclass
class LinearConfig:
    """A linear head on frozen pooled features; no options beyond the training settings."""

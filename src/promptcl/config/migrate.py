"""Compatibility rules: configs written by older promptcl, read in today's form.

Each rule is one function whose docstring names the promptcl that wrote the old form, so a rule
can be dropped when that promptcl no longer needs reading. ``reading.py`` and the protocols'
loaders call them; nothing else knows about old forms.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# ---- config keys: a YAML file or a run's config.json


def train_device(raw: Any) -> Any:
    """promptcl 0.1.0 before the Lightning Fabric engine wrote ``train.device`` (``auto``,
    ``cpu``, ``cuda:1``): today's ``train.accelerator`` and ``train.devices``."""
    train = raw.get("train") if isinstance(raw, dict | DictConfig) else None
    if isinstance(train, dict | DictConfig) and "device" in train:
        device = str(train.pop("device"))
        if device != "auto":
            kind, _, index = device.partition(":")
            train.setdefault("accelerator", kind)
            if index:
                train.setdefault("devices", [int(index)])
    return raw


# keys whose default changed after runs were written without them: (dotted key, the value
# those runs used). A run's config.json that has the key's parent but not the key was made
# before it existed, so it resumes (and loads) with the old value, not today's default.
OLD_DEFAULTS = (("tuner.tii.classifier", "mlp"),)  # the default became lda with issue 16


def old_defaults(raw: DictConfig) -> list[str]:
    """Runs of promptcl 0.1.0 made before a key of ``OLD_DEFAULTS`` existed (the TII classifier
    before issue 16): ``key=value`` overrides giving them the value they were made with."""
    filled = []
    for key, value in OLD_DEFAULTS:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(raw, parent)
        if isinstance(node, DictConfig) and name not in node:
            filled.append(f"{key}={value}")
    return filled


# ---- config paths: what --config names


def repository_path(name: str) -> str:
    """promptcl 0.1.0 before issue 15 kept its configs in the repository's ``configs/``, so
    commands named ``configs/clinc150/hash.yaml``: the shipped config's name without it."""
    return name.removeprefix("configs/")

"""Compatibility rules: configs and run directories written by older promptcl, read in
today's form. Fixtures of each older run layout are in tests/fixtures (tests/test_old_runs.py).

Each rule is one function whose docstring names the promptcl that wrote the old form, so a rule
can be dropped when that promptcl no longer needs reading. Config reading, the core's run
directory and checkpoint, the protocols and the loaders call them; nothing else knows about old
forms.

Version 0.1.0 wrote run directories without ``kind`` and ``promptcl_version`` in config.json,
a continual checkpoint state counting ``tasks_done`` with ``acc_rows`` and ``train_samples``,
and a base-to-novel run's trained tensors as an unverified ``prompts.safetensors``. The first
0.1 checkpoints kept their state in a ``state.json`` beside the tensors.
"""

from __future__ import annotations

from pathlib import Path
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


# ---- run directories: config.json, checkpoints and trained tensors

KINDS = ("continual", "base-to-novel")
# tensors that methods gained after runs were saved without them: a checkpoint that lacks one
# takes the freshly built method's value (Hash's drift diagnostic; the TII classifier of the
# Soft-TF family's tuner.task_id=tii)
ADDED_TENSORS = ("drift", "tii.")


# tensors saved under another name before they moved into a shared module: old name -> new
# (ranpac's random-feature ridge, taskid/ridge.py since issue 27)
MOVED_TENSORS = {
    name: f"classifier.{name}" for name in ("projection", "gram", "target_sum", "weight", "ridge")
}


def run_kind(folder: Path, config: dict[str, Any]) -> str | None:
    """The kind of run in ``folder``: config.json's ``kind``, or for runs of 0.1.0, which did
    not record it, the file only that kind wrote; None when it is no run directory."""
    kind = config.get("kind")
    if kind is not None:
        return kind if kind in KINDS else None
    if (folder / "class_split.json").is_file():
        return "base-to-novel"
    if (folder / "class_order.json").is_file() or (folder / "checkpoint").exists():
        return "continual"
    return None


def run_state(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's JSON state in today's keys (0.1.0 counted tasks and training samples)."""
    data = dict(data)
    if "tasks_done" in data:
        data.setdefault("units_done", data.pop("tasks_done"))
    if "train_samples" in data:
        data.setdefault("samples_seen", data.pop("train_samples"))
    data.setdefault("promptcl_version", None)  # written before the field existed
    return data


def unfingerprinted(config: dict[str, Any]) -> bool:
    """Whether a run may hold a checkpoint state without a fingerprint: the first 0.1
    checkpoints (state.json) had none, and promptcl 0.1.0 wrote config.json without
    ``promptcl_version``; every run that records its version fingerprints its checkpoints."""
    return not config.get("promptcl_version")


def unverified_state(folder: Path) -> str | None:
    """The state.json the first 0.1 checkpoints kept beside their tensors (no checksum)."""
    legacy = folder / "state.json"
    return legacy.read_bytes().decode(errors="replace") if legacy.is_file() else None


def moved_tensors(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """promptcl up to 0.2.0 saved ranpac's tensors at the top of its state
    (``gram``, ...): ``saved`` with such a name that ``fresh`` lacks, and whose new name
    (``MOVED_TENSORS``) ``fresh`` has, renamed."""

    def name(key: str) -> str:
        new = MOVED_TENSORS.get(key)
        return new if new is not None and key not in fresh and new in fresh else key

    return {name(key): value for key, value in saved.items()}


def added_tensors(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the tensors of ``ADDED_TENSORS`` that it lacks taken from ``fresh``."""
    added = {
        name: value
        for name, value in fresh.items()
        if name not in saved and any(name.startswith(prefix) for prefix in ADDED_TENSORS)
    }
    if any(name.startswith("tii.") for name in saved):
        added = {name: value for name, value in added.items() if not name.startswith("tii.")}
    return {**saved, **added}


# files of older layouts that loading reads: a 0.1.0 b2n run's tensors, the first 0.1 states
LEGACY_FILES = ("prompts.safetensors", "checkpoint/state.json")


def legacy_prompts(folder: Path) -> Path | None:
    """The trained tensors of a 0.1.0 base-to-novel run (prompts.safetensors, unverified)."""
    path = folder / "prompts.safetensors"
    return path if path.is_file() else None


def class_text_template(split: dict[str, Any], configured: str | None, default: str | None):
    """The template a base-to-novel run slotted class names into: class_split.json's; runs
    that predate the field used data.template, else (text runs) the intent template
    ``default``; None when it cannot be known (an image run of then)."""
    return split.get("template") or configured or default


def run_version(config: dict[str, Any], metrics: Any) -> str | None:
    """The promptcl version that wrote a run: config.json's; a 0.1.0 b2n run wrote it in
    metrics.json only."""
    if config.get("promptcl_version"):
        return config["promptcl_version"]
    return metrics.get("promptcl_version") if isinstance(metrics, dict) else None

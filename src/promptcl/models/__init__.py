"""Use a trained model, peft-style: ``model = promptcl.load(run_dir)``, ``model.predict(inputs)``.

``load`` reads the kind of run a directory holds and hands it to that kind's loader: a
continual run (models/continual.py) or a base-to-novel run (models/b2n.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptcl.errors import UsageError
from promptcl.models.b2n import load_b2n_run
from promptcl.models.base import Prediction, TrainedModel
from promptcl.models.continual import load_continual_run


def load(run_dir: str | Path, device: str | torch.device | None = None) -> TrainedModel:
    """The trained model of a ``promptcl run`` or ``promptcl b2n`` run directory, on
    ``device`` (default: the run's accelerator). A run that has not finished a task, or whose
    files do not fit what its config.json builds, is a UsageError of one line."""
    path = Path(run_dir)
    if (path / "class_split.json").is_file():
        return load_b2n_run(path, device)
    if (path / "class_order.json").is_file() or (path / "checkpoint").exists():
        return load_continual_run(path, device)
    raise UsageError(
        f"{path} is not a promptcl run directory (no class_order.json or class_split.json); "
        "pass the --out of promptcl run or promptcl b2n"
    )


__all__ = ["Prediction", "TrainedModel", "load"]

"""Use a trained model, peft-style: ``model = promptcl.load(run_dir)``, ``model.predict(inputs)``.

``load`` reads the kind of run a directory holds and hands it to that kind's loader: a
continual run (models/continual.py) or a base-to-novel run (models/b2n.py). A run pushed to
the Hugging Face Hub (``promptcl push``, models/hub.py) is downloaded first.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptcl.core.rundir import RunDir
from promptcl.models.b2n import load_b2n_run
from promptcl.models.base import Prediction, TrainedModel
from promptcl.models.continual import load_continual_run
from promptcl.models.hub import download, is_hub_run, push

LOADERS = {"continual": load_continual_run, "base-to-novel": load_b2n_run}


def load(run_dir: str | Path, device: str | torch.device | None = None) -> TrainedModel:
    """The trained model of a ``promptcl run`` or ``promptcl b2n`` run directory, or of one
    on the Hub (``"hf:OWNER/NAME"`` or ``"hf:OWNER/NAME@REVISION"``), on ``device`` (default:
    the run's accelerator), by the kind config.json records. A run that has not finished a
    task, or whose files do not fit what its config.json builds, is a UsageError of one
    line."""
    path = download(run_dir) if is_hub_run(run_dir) else Path(run_dir)
    return LOADERS[RunDir(path).kind()](path, device)


__all__ = ["Prediction", "TrainedModel", "load", "push"]

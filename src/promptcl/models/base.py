"""Use a trained model, peft-style: ``model = promptcl.load(run_dir)``, ``model.predict(inputs)``.

``load`` rebuilds the run from its own directory: the backbone from config.json (a packaged
name, a local directory, a hub id or a weights file, as the run named it), then only the
trained tensors; class names and tasks come from the run directory, never from benchmark data.
A continual run (``promptcl run``: class_order.json, checkpoint/) loads as it was at its last
task boundary (models/continual.py); a base-to-novel run (``promptcl b2n``: class_split.json,
prompts.safetensors) scores any list of class names (models/b2n.py). ``predict`` runs the
inference of the run's own evaluation, batched, without gradients, on the run's device or
the one passed to ``load``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from promptcl.errors import UsageError
from promptcl.files import parse_json, read_text


@dataclass(frozen=True)
class Prediction:
    """The result of one input."""

    label: str  # the predicted class name
    score: float  # its softmax probability among the classes that compete
    task: int | None = None  # the inferred task (an index into ``model.tasks``), or None


class TrainedModel(ABC):
    """A finished run, ready to predict. ``modality`` is "text" or "image"; ``class_names``
    are the classes ``predict`` chooses among by default; ``tasks`` the class names of each
    task of a continual run (None for b2n runs); ``version`` is the promptcl version that wrote
    the run (None: older than the field)."""

    path: Path
    modality: str
    class_names: list[str]
    tasks: list[list[str]] | None
    version: str | None

    @abstractmethod
    def predict(
        self,
        inputs: Sequence[Any],
        batch_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """One Prediction per input: texts for text runs; image file paths, PIL images or
        uint8 arrays for image runs. ``batch_size`` defaults to the run's
        ``train.eval_batch_size``; ``class_names`` (b2n runs only) replaces the run's classes."""

    def check_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        """``inputs`` as a list the run's processor reads; a one-line error for the first one
        it cannot (image files are opened here, so nothing fails half-way through)."""
        if isinstance(inputs, str | Path | Image.Image):
            raise UsageError("predict takes a list of inputs; wrap a single one in [ ]")
        items = list(inputs)
        for n, item in enumerate(items, 1):
            if self.modality == "text":
                if not isinstance(item, str):
                    raise UsageError(f"input {n} is {type(item).__name__}, not text; pass strings")
            elif isinstance(item, str | Path):
                check_image(Path(item))
            elif not isinstance(item, Image.Image | np.ndarray):
                raise UsageError(
                    f"input {n} is {type(item).__name__}; pass image paths, PIL images or arrays"
                )
        return [str(item) if isinstance(item, Path) else item for item in items]

    def __repr__(self) -> str:
        names = ", ".join(self.class_names[:4]) + (", ..." if len(self.class_names) > 4 else "")
        return f"{type(self).__name__}({self.path}, {len(self.class_names)} classes: {names})"


def check_image(path: Path) -> None:
    """A one-line error unless ``path`` is an image file PIL can read."""
    if not path.is_file():
        raise UsageError(f"image {path} not found; check the path")
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError):
        raise UsageError(f"{path} is not an image PIL can read; pass JPEG, PNG, ...") from None


def inference_train_config(cfg: Any, device: str | torch.device | None) -> Any:
    """The run's ``train`` keys for inference on one device: ``device`` ("cpu", "cuda",
    "cuda:1", a torch.device) or, when None, the run's accelerator; no process group, logger,
    compilation or progress bar. The precision stays the run's."""
    accelerator, devices = cfg.accelerator, 1
    if device is not None:
        try:
            where = torch.device(device)
        except (RuntimeError, TypeError):
            raise UsageError(f"unknown device {device!r}; pass cpu, cuda or cuda:N") from None
        accelerator, devices = where.type, 1 if where.index is None else [where.index]
    return replace(
        cfg,
        accelerator=accelerator,
        devices=devices,
        strategy="auto",
        num_nodes=1,
        logger="none",
        compile=False,
        progress=False,
    )


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file of a run directory; ``what`` names what is missing when it is absent."""
    if not path.is_file():
        raise UsageError(f"{path.parent} lacks {path.name} ({what}); pass a run directory")
    try:
        return parse_json(read_text(path))
    except ValueError as err:
        raise UsageError(
            f"{path} is not valid JSON ({str(err).partition(':')[0]}); restore it from a copy of "
            "the run"
        ) from None

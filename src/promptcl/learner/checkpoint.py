"""Checkpoints at task boundaries: the tuner's trained tensors (safetensors) plus JSON state.
Nothing is pickled and the frozen backbone is never stored."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from promptcl.files import write_json

TENSORS = "tuner.safetensors"
STATE = "state.json"


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / TENSORS)
    write_json(folder / STATE, state)  # written last: it marks the checkpoint complete


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    if not (folder / STATE).is_file():
        return None
    state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    return load_file(str(folder / TENSORS)), state

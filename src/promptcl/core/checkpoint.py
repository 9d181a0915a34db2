"""Checkpoints at task boundaries: one safetensors file holding the tuner's trained tensors and,
in its metadata, the JSON run state and a checksum over both. Nothing is pickled and the frozen
backbone is never stored.

The file is written next to its final name and renamed over it, so a task boundary is one
atomic step: a crash leaves the previous task's checkpoint or the new one, never a mix. Resume
verifies the checksum, so a truncated or edited checkpoint is refused with one line instead of
resuming into a different run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from promptcl.errors import UsageError
from promptcl.files import strict

CHECKPOINT = "tuner.safetensors"


def checksum(tensors: dict[str, torch.Tensor], state: str) -> str:
    digest = hashlib.sha256(state.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict(state), allow_nan=False)
    metadata = {"state": text, "sha256": checksum(tensors, text)}
    tmp = folder / (CHECKPOINT + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / CHECKPOINT)


def load_checkpoint(
    folder: Path, hint: str = "start a new --out, or resume from a copy"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and state of the last finished task, or None before the first one; a
    damaged file is a one-line error ending in ``hint``."""
    path = folder / CHECKPOINT
    broken = UsageError(f"{path} is damaged (truncated or edited); {hint}")
    if folder.exists() and not folder.is_dir():
        raise broken
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:  # one read: tensors and metadata
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        raise broken from None
    text = metadata.get("state")
    legacy = folder / "state.json"  # promptcl 0.1 wrote the state beside the tensors, unverified
    if text is None and legacy.is_file():
        text = legacy.read_bytes().decode(errors="replace")
    elif text is None or metadata.get("sha256") != checksum(tensors, text):
        raise broken
    try:
        state = json.loads(text)
    except json.JSONDecodeError:
        raise broken from None
    done = state.get("tasks_done") if isinstance(state, dict) else None
    if not isinstance(done, int) or done < 1 or len(state.get("acc_rows", ())) != done:
        raise broken
    return tensors, state

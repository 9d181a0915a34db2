"""Checkpoints at unit boundaries (a continual task; a base-to-novel epoch), and with
train.checkpoint_every within units: one safetensors file holding the trained tensors and, in
its metadata, the JSON run state and a checksum over both. Nothing is pickled and the frozen
backbone is never stored.

The file is written next to its final name and renamed over it, so a boundary is one atomic
step: a crash leaves the previous checkpoint or the new one, never a mix. Loading verifies the
checksum, so a truncated or edited checkpoint is refused with one line instead of resuming
into a different run. Checkpoints of older versions are read through promptcl.config.migrate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from promptcl.config import migrate
from promptcl.errors import UsageError
from promptcl.files import parse_json, strict
from promptcl.version import __version__

CHECKPOINT = "tuner.safetensors"
WITHIN_UNIT = ("unit_epoch", "epoch_steps", "unit_steps")  # RunState's position in a unit


@dataclass
class RunState:
    """Where a run stands: what the checkpoint stores beside the tensors."""

    units_done: int = 0  # finished units: tasks (continual) or epochs (base-to-novel); 0 for
    # a base-to-novel run of prompts trained elsewhere
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per finished unit
    steps: int = 0  # optimisation steps so far
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples_seen: int = 0  # training samples processed, counted once per epoch
    fingerprint: str | None = None  # of config.json and the class file (RunDir.fingerprint)
    promptcl_version: str | None = __version__  # of the code that wrote it (None: older)
    # within a unit (a train.checkpoint_every checkpoint; a boundary leaves the defaults): the
    # epoch in progress, the steps done in it and the loss terms of each step of the unit
    unit_epoch: int = 0
    epoch_steps: int = 0
    unit_steps: list[dict[str, float]] = field(default_factory=list)

    def within_unit(self) -> bool:
        """Whether the checkpoint was written within a unit (after at least one step)."""
        return bool(self.unit_steps)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.within_unit():  # a boundary's state as before these fields
            for name in WITHIN_UNIT:
                del data[name]
        return json.dumps(strict(data), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> RunState | None:
        """The state a checkpoint's JSON holds (older versions' keys migrated), or None when
        it is not one."""
        try:
            data = parse_json(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        data = migrate.run_state(data)
        if not {"units_done", "log"} <= data.keys():  # other fields: defaults in older states
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in names})
        return state if state.valid() else None

    def valid(self) -> bool:
        """Whether every field has its type (JSON gives any), the counts are not negative and
        the log holds a row (an object) per finished unit."""
        counts = (self.units_done, self.steps, self.samples_seen, self.unit_epoch, self.epoch_steps)
        seconds = (self.train_seconds, self.eval_seconds)
        names = (self.fingerprint, self.promptcl_version)
        return (
            all(type(n) is int and n >= 0 for n in counts)
            and isinstance(self.unit_steps, list)
            and all(
                isinstance(terms, dict)
                and all(isinstance(k, str) and type(v) in (int, float) for k, v in terms.items())
                for terms in self.unit_steps
            )
            and self.epoch_steps <= len(self.unit_steps)
            and all(type(s) in (int, float) and s >= 0 for s in seconds)
            and all(v is None or isinstance(v, str) for v in names)
            and isinstance(self.log, list)
            and all(isinstance(row, dict) for row in self.log)
            and len(self.log) == self.units_done
        )


def checksum(tensors: dict[str, torch.Tensor], state: str) -> str:
    digest = hashlib.sha256(state.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], state: RunState) -> None:
    """Write the checkpoint atomically; a failed write (a full disk) raises OSError, leaving
    the previous checkpoint and no temp file."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = state.to_json()
    metadata = {"state": text, "sha256": checksum(tensors, text)}
    tmp = folder / (CHECKPOINT + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / CHECKPOINT)
    except (OSError, SafetensorError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise
        raise OSError(f"{tmp}: {err}") from None  # safetensors' own error for a failed write


def read_tensors(path: Path, broken: UsageError) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata in one read; ``broken`` when it is not one."""
    try:
        with safe_open(str(path), "pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
            return tensors, f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        raise broken from None


def load_checkpoint(
    folder: Path, hint: str = "start a new --out, or resume from a copy"
) -> tuple[dict[str, torch.Tensor], RunState] | None:
    """The tensors and state of the last finished unit, or None before the first one; a
    damaged file is a one-line error ending in ``hint``."""
    path = folder / CHECKPOINT
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{path} is damaged (truncated or edited); {hint}")
    if not path.is_file():
        return None
    return read_checkpoint(path, hint)


def read_checkpoint(path: Path, hint: str) -> tuple[dict[str, torch.Tensor], RunState]:
    """A checkpoint file's tensors and state, its checksum verified."""
    broken = UsageError(f"{path} is damaged (truncated or edited); {hint}")
    tensors, metadata = read_tensors(path, broken)
    text = metadata.get("state")
    if text is None:
        text = migrate.unverified_state(path.parent)
    elif metadata.get("sha256") != checksum(tensors, text):
        raise broken
    state = None if text is None else RunState.from_json(text)
    if state is None:
        raise broken
    return tensors, state

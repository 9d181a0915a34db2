"""The run directory of both protocols: what a finished (or interrupted) run leaves behind.

config.json      the resolved configuration, with the run's ``kind`` (continual or
                 base-to-novel) and the ``promptcl_version`` that wrote it
CLASSES          the protocol's classes: class_order.json (continual: class order and task
                 split) or class_split.json (base-to-novel: base and novel classes, template)
log.jsonl        one line per finished unit (a continual task; a base-to-novel epoch)
metrics.json     final figures (and the checkpoint's size);  *.png  the protocol's plots
checkpoint/      trained tensors + JSON state (one checksummed safetensors file) at the last
                 unit boundary (after the last unit, without what only resuming needs:
                 Protocol.finished_state);  .lock  while a run writes here
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from promptcl.config import migrate, read_yaml
from promptcl.core.checkpoint import CHECKPOINT, RunState
from promptcl.errors import UsageError
from promptcl.files import dumps, write_json, write_text
from promptcl.version import __version__

# what ``promptcl.load`` reads of a run directory (the class file is one of the two)
LOADED_FILES = (
    "config.json",
    "class_order.json",
    "class_split.json",
    "metrics.json",
    f"checkpoint/{CHECKPOINT}",
)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoint = self.path / "checkpoint"

    def create(self, kind: str, config: dict[str, Any], classes_file: str, classes: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config, {"kind": kind, "promptcl_version": __version__, **config})
        write_json(self.path / classes_file, classes)
        write_text(self.path / "log.jsonl", "")

    def fingerprint(self, classes: Any) -> str:
        """A digest of config.json as written and of the protocol's classes: a checkpoint holds
        it, and resume and load refuse a run whose config.json or class file was edited."""
        digest = hashlib.sha256(self.config.read_bytes())
        digest.update(dumps(classes).encode())
        return digest.hexdigest()

    def matches(self, state: RunState, classes: Any) -> bool:
        """Whether a checkpoint's ``state`` was written for config.json and ``classes`` as they
        are: its fingerprint is theirs, or it has none and config.json says the run predates
        fingerprints (``migrate.unfingerprinted``), so a stripped one is no way around it."""
        if state.fingerprint is None:
            return migrate.unfingerprinted(self.read_config())
        return state.fingerprint == self.fingerprint(classes)

    def files_to_load(self) -> list[Path]:
        """The files ``promptcl.load`` reads that this run directory holds: config.json, the
        class file, metrics.json, the checkpoint (and the trained tensors of older layouts)."""
        names = [*LOADED_FILES, *migrate.LEGACY_FILES]
        return [self.path / name for name in names if (self.path / name).is_file()]

    def is_run(self) -> bool:
        return self.config.is_file()

    def has_checkpoint(self) -> bool:
        return (self.checkpoint / CHECKPOINT).is_file()

    def checkpoint_bytes(self) -> int:
        """The checkpoint's size on disk (0 without one: nothing trained)."""
        path = self.checkpoint / CHECKPOINT
        return path.stat().st_size if path.is_file() else 0

    def read_config(self) -> dict[str, Any]:
        """config.json as a dict, run keys included; one-line errors."""
        if not self.is_run():
            raise UsageError(
                f"{self.path} is not a promptcl run directory (no config.json); pass the --out "
                "of promptcl run or promptcl b2n"
            )
        return OmegaConf.to_container(read_yaml(self.config))

    def kind(self) -> str:
        """The run's kind (config.json's, or for older runs what their files say)."""
        kind = migrate.run_kind(self.path, self.read_config())
        if kind is None:
            raise UsageError(
                f"{self.path} is not a promptcl run directory (unknown kind); pass the --out of "
                "promptcl run or promptcl b2n"
            )
        return kind

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        write_text(self.path / "log.jsonl", "".join(dumps(row) + "\n" for row in rows))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.path / "metrics.json", metrics)

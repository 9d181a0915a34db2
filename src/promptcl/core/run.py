"""A run from start to end, for every protocol: the run directory checked before any work, the
lock, resume from the last checkpoint, one unit after another (a continual task; a
base-to-novel epoch) with a checkpoint and a log line at each boundary (with
train.checkpoint_every also a checkpoint every that many steps within a unit, resumed at that
step), then the protocol's final figures and plots. A protocol is a ``Protocol``: what differs
is passed in, as a method passes its loss terms.
"""

from __future__ import annotations

import dataclasses
import errno
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import torch

from promptcl.config import config_differences, to_dict
from promptcl.core.checkpoint import CHECKPOINT, RunState, load_checkpoint, save_checkpoint
from promptcl.core.loop import EPOCH_RNG, RNG, Loop, Position, method_tensors
from promptcl.core.rundir import RunDir
from promptcl.engine import Engine
from promptcl.errors import UsageError
from promptcl.files import check_out, run_lock
from promptcl.version import __version__


class Protocol(ABC):
    """One kind of run on an engine, built and checked before anything is written to disk."""

    kind: ClassVar[str]  # recorded in config.json; promptcl.load dispatches on it
    command: ClassVar[str]  # the CLI command that makes and resumes such runs
    classes_file: ClassVar[str]  # the run directory's file of the protocol's classes
    unit: ClassVar[str]  # what a unit is called: "task", "epoch"

    config: Any
    engine: Engine
    loop: Loop  # trains every unit; within one it calls back for checkpoints

    @abstractmethod
    def classes(self) -> Any:
        """The content of ``classes_file`` (JSON)."""

    @abstractmethod
    def num_units(self) -> int:
        """Units of work, each ended by a checkpoint."""

    @abstractmethod
    def run_unit(self, unit: int, state: RunState) -> dict[str, Any]:
        """Do unit ``unit`` (adding its seconds, steps and samples to ``state``); its log row."""

    @abstractmethod
    def report(self, row: dict[str, Any], state: RunState) -> None:
        """A finished unit on the terminal and the loggers."""

    @abstractmethod
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Every tensor a resume or a loaded model needs (never the frozen backbone)."""

    def finished_state(self) -> dict[str, torch.Tensor]:
        """What the checkpoint of a finished run keeps: what a loaded model needs, as nothing
        resumes it (by default all of ``trained_state``)."""
        return self.trained_state()

    @abstractmethod
    def restore(self, tensors: dict[str, torch.Tensor], state: RunState) -> None:
        """Back to where the checkpoint of ``tensors`` (the method's) and ``state`` was
        written; within a unit (``loop.position`` set), to that unit's start."""

    @abstractmethod
    def valid_log(self, log: list[dict[str, Any]]) -> bool:
        """Whether a checkpoint's log rows hold what ``finish`` reads, with its types."""

    @abstractmethod
    def finish(self, state: RunState) -> dict[str, Any]:
        """The run's final figures (metrics.json), after its last unit."""

    @abstractmethod
    def plot(self, folder: Path, metrics: dict[str, Any]) -> None:
        """The run's figures as PNG files in ``folder``."""

    @classmethod
    @abstractmethod
    def saved_config(cls, run_dir: RunDir, overrides: Sequence[str] = ()) -> Any:
        """The config a run directory of this kind was made with, then ``overrides``."""

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    def run_fields(self) -> dict[str, Any]:
        """The head of metrics.json: the settings' name, method, benchmark, backbone, seed."""
        config = self.config
        keys = ("method", "benchmark", "backbone", "seed")
        return {"config": config.name, **{key: getattr(config, key) for key in keys}}


def new_run_hint(out: Path) -> str:
    return f"pass --resume {out} to continue it or a new --out"


def prepare(protocol: type[Protocol], out: Path, resume: bool) -> RunDir:
    """Check the run directory before any work: nothing is written here."""
    run_dir = RunDir(out)
    if not resume:
        check_out(out, new_run_hint(out))
        return run_dir
    if not run_dir.is_run():
        raise UsageError(f"{out} is not a promptcl run directory; check the --resume path")
    kind = run_dir.kind()
    if kind != protocol.kind:
        raise UsageError(
            f"{out} is a {kind} run; resume it with the command that made it, not "
            f"promptcl {protocol.command}"
        )
    return run_dir


def write_or_stop(write: Callable[[], Any], exp: Protocol, out: Path, kept: int) -> None:
    """``write`` (on the main rank), or when it fails (a full disk, a file that became a
    folder) a one-line error saying what is kept and how to resume."""

    def attempt() -> None:
        try:
            write()
        except OSError as err:
            full = err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err)
            why = "the disk is full" if full else f"cannot write there ({err.strerror or err})"
            path = err.filename2 or err.filename  # os.replace: the file it replaces
            where = f"{path}: " if path else ""
            raise UsageError(
                f"{where}{why}; kept: the checkpoint after {kept} {exp.unit}(s); "
                f"{'free space' if full else 'fix it'}, then continue with promptcl "
                f"{exp.command} --resume {out}"
            ) from None

    exp.engine.on_main(attempt)


def within_unit(
    state: RunState, tensors: dict[str, torch.Tensor], run_dir: RunDir
) -> Position | None:
    """The position a checkpoint written within a unit holds (None at a boundary); ``state``
    is left at the unit's start."""
    if not state.within_unit():
        return None
    if RNG not in tensors or EPOCH_RNG not in tensors:
        raise UsageError(
            f"{run_dir.checkpoint / CHECKPOINT} is damaged (a checkpoint within a unit without "
            "its random state); start a new --out, or resume from a copy"
        )
    position = Position(state.unit_epoch, state.epoch_steps, state.unit_steps)
    state.unit_epoch, state.epoch_steps, state.unit_steps = 0, 0, []
    return position


def run(
    protocol: type[Protocol],
    config: Any,
    out: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    **options: Any,
) -> dict[str, Any] | None:
    """Run (or resume) ``protocol`` with ``config`` into ``out``. Returns metrics.json's
    content, or None when ``stop_after`` units were done and the run was left to be resumed.
    ``options`` go to the protocol's constructor."""
    out = Path(out)
    run_dir = prepare(protocol, out, resume)
    engine = Engine(config.train, log_root=out)
    engine.launch()
    exp = protocol(config, engine, **options)
    classes = exp.classes()
    with ExitStack() as held:
        hint = None if resume else new_run_hint(out)
        engine.on_main(lambda: held.enter_context(run_lock(out, hint)))
        saved = load_checkpoint(run_dir.checkpoint) if resume else None
        if resume:
            diffs = config_differences(to_dict(protocol.saved_config(run_dir)), exp.config_dict())
            if diffs:
                raise UsageError(
                    f"{out} was made with another config (differs in {', '.join(diffs)}); "
                    "resume without --config/--set, or start a new --out"
                )
        if saved is None:  # a new run, or one stopped before its first unit boundary

            def create() -> None:
                run_dir.create(exp.kind, exp.config_dict(), exp.classes_file, classes)

            write_or_stop(create, exp, out, 0)
        fingerprint = run_dir.fingerprint(classes)
        state = RunState()
        if saved is not None:
            tensors, state = saved
            if not exp.valid_log(state.log):
                raise UsageError(
                    f"{run_dir.checkpoint / CHECKPOINT} is damaged (its log is not a "
                    f"{exp.kind} run's); start a new --out, or resume from a copy"
                )
            changed = not run_dir.matches(state, classes)
            units = exp.num_units() - (1 if state.within_unit() else 0)  # one in progress
            if changed or state.units_done > units:
                raise UsageError(
                    f"{out}: config.json or the data changed after the checkpoint was written; "
                    "restore them, or start a new --out"
                )
            exp.loop.resume(within_unit(state, tensors, run_dir), tensors)
            exp.restore(method_tensors(tensors), state)
            # a run stopped before writing it
            write_or_stop(lambda: run_dir.write_log(state.log), exp, out, state.units_done)
        state.fingerprint = fingerprint
        state.promptcl_version = __version__  # of the code that writes the checkpoint
        engine.log_config(exp.config_dict())

        def save() -> None:
            finished = state.units_done == exp.num_units()
            tensors = exp.finished_state() if finished else exp.trained_state()
            save_checkpoint(run_dir.checkpoint, tensors, state)

        def save_within() -> None:
            at = exp.loop.position
            assert at is not None  # the loop calls back within a unit only
            within = dataclasses.replace(
                state,
                steps=exp.loop.steps,
                unit_epoch=at.epoch,
                epoch_steps=at.step,
                unit_steps=at.terms,
            )
            tensors = {**exp.trained_state(), **exp.loop.tensors()}
            save_checkpoint(run_dir.checkpoint, tensors, within)

        exp.loop.checkpoint = lambda: write_or_stop(save_within, exp, out, state.units_done)
        for unit in range(state.units_done, exp.num_units()):
            if stop_after is not None and unit >= stop_after:
                return None
            row = exp.run_unit(unit, state)
            state.log.append(row)
            state.units_done = unit + 1
            write_or_stop(save, exp, out, unit)
            write_or_stop(lambda: run_dir.write_log(state.log), exp, out, unit + 1)
            exp.report(row, state)

        metrics = exp.finish(state)

        def write_results() -> None:
            trained = exp.finished_state()
            if trained and not run_dir.has_checkpoint():  # trained elsewhere (b2n --prompts)
                save_checkpoint(run_dir.checkpoint, trained, state)
            metrics["checkpoint_bytes"] = run_dir.checkpoint_bytes()
            run_dir.write_metrics(metrics)
            exp.plot(out, metrics)

        write_or_stop(write_results, exp, out, state.units_done)
        engine.log_final(metrics, state.steps)
        engine.finish_logging()
        engine.barrier()
        return metrics


__all__ = ["Protocol", "RunDir", "RunState", "prepare", "run"]

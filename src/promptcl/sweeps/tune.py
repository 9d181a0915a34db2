"""``promptcl tune``: settings chosen on the validation split, then one run of the best on the
test split, the only test figure reported (docs/DESIGN: hyper-parameters are chosen on
validation data, never on test data).

Each trial is a run directory ``trials/NNN`` with ``data.eval_split=val`` and the trial's values
of the declared ranges; its objective is FAA (``promptcl run``) or HM (``promptcl b2n``).
Optuna's TPE sampler (seeded) proposes the values; the trials are kept in a journal file
(``study.log``) in the tuning folder, so running the same command again continues: finished
trials count, a trial stopped half-way is run again from its run directory's last checkpoint.
Then ``final`` is the best trial's setting on the test split. Needs the ``tune`` extra
(``pip install promptcl[tune]``).

Ranges: ``KEY=LOW:HIGH`` (uniform; integers when both bounds are), ``KEY=LOW:HIGH:log``
(log-uniform), ``KEY=A,B,C`` (a choice, written as ``--set`` values are).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcl.core.rundir import RunDir
from promptcl.errors import UsageError
from promptcl.files import check_path, parse_json, read_text, write_json
from promptcl.sweeps.grid import COMMANDS, Command, check_new, parse_axes
from promptcl.version import __version__

INT = re.compile(r"[+-]?\d+")
STUDY, STUDY_NAME, RECORD = "study.log", "promptcl", "tune.json"


@dataclass(frozen=True)
class Range:
    """A key's declared values: numbers in [low, high] (``log``: log-uniform), or ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()

    @classmethod
    def parse(cls, key: str, values: list[str]) -> Range:
        text = values[0]
        if len(values) > 1:
            return cls(key, choices=tuple(values))
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[2:] not in ([], ["log"]):
            raise UsageError(
                f"--range {key}={text}: write LOW:HIGH, LOW:HIGH:log or A,B,... (a choice)"
            )
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError(f"--range {key}={text}: LOW and HIGH must be numbers") from None
        log = parts[2:] == ["log"]
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise UsageError(f"--range {key}={text}: needs finite LOW < HIGH")
        if log and low <= 0:
            raise UsageError(f"--range {key}={text}: a log range needs LOW > 0")
        integer = all(INT.fullmatch(p.strip()) for p in parts[:2])
        return cls(key, low, high, log, integer)

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.choices:
            return CategoricalDistribution(self.choices)
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices:
            return f"{self.key} in {{{', '.join(self.choices)}}}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError("promptcl tune needs Optuna; pip install 'promptcl[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class Tuning:
    """``trials`` trials of ``command`` over ``ranges`` in ``folder``, each from ``config`` and
    ``sets``; the TPE sampler seeded with ``seed``."""

    command: Command
    folder: Path
    config: str | None
    sets: list[str]
    ranges: list[Range]
    trials: int
    seed: int

    @classmethod
    def from_args(
        cls,
        command: str,
        config: str | None,
        sets: Sequence[str],
        ranges: Sequence[str],
        folder: Path | None,
        trials: int,
        seed: int,
    ) -> Tuning:
        """The tuning of a command line, checked before any work (one-line errors): the
        ranges, the config, and that the benchmark has a validation split."""
        if folder is None:
            raise UsageError("pass --out TUNE_DIR: the folder of the trials and the final run")
        check_path(folder, "--out")
        if not ranges:
            raise UsageError("nothing to tune; declare --range KEY=LOW:HIGH[:log] or KEY=A,B")
        if trials < 1:
            raise UsageError(f"--trials {trials} must be >= 1")
        parsed = [Range.parse(k, v) for k, v in parse_axes(ranges, "--range")]
        fixed = {item.partition("=")[0].strip() for item in sets}
        for r in parsed:
            if r.key in fixed:
                raise UsageError(f"{r.key} is both --set and --range; keep one")
        tuning = cls(COMMANDS[command], folder, config, list(sets), parsed, trials, seed)
        config_ = tuning.load({}, "val")
        try:
            tuning.command.data(config_, "val")
        except UsageError:
            tuning.command.data(config_, "test")  # the data's own errors, said as they are
            raise UsageError(
                f"benchmark {config_.benchmark} has no validation split, on which tune chooses "
                "settings; tune on a benchmark with one"
            ) from None
        return tuning

    def load(self, params: dict[str, Any], split: str) -> Any:
        values = [f"{key}={value}" for key, value in params.items()]
        return self.command.load(self.config, [*self.sets, *values, f"data.eval_split={split}"])

    def spec(self) -> dict[str, Any]:
        """What the study was made for: rerunning with another spec is refused."""
        return {
            "protocol": self.command.name,
            "config": self.config,
            "set": self.sets,
            "range": [r.describe() for r in self.ranges],
        }

    def run(self, say: Callable[[str], None]) -> dict[str, Any]:
        """The trials still to run, then the final test run; tune.json's content."""
        optuna = optuna_module()
        self.open()
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.folder / STUDY))
        )
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True
        )
        # seeded afresh by the trials so far: a continued study does not repeat its proposals
        study.sampler = optuna.samplers.TPESampler(seed=self.seed + len(study.trials))
        state = optuna.trial.TrialState
        for stale in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
            study.tell(stale.number, state=state.FAIL)  # stopped half-way: run it again
            study.enqueue_trial(stale.params, stale.user_attrs or None)
        distributions = {r.key: r.distribution() for r in self.ranges}
        while len(study.get_trials(deepcopy=False, states=(state.COMPLETE,))) < self.trials:
            trial = study.ask(distributions)
            name = trial.user_attrs.get("run_dir") or f"trials/{trial.number:03d}"
            trial.set_user_attr("run_dir", name)
            value = self.objective(trial.params, name)
            study.tell(trial, value)
            say(f"trial {trial.number} ({settings(trial.params)}): val {self.figure} {value:.2f}")
        best = study.best_trial
        say(f"best on val: {settings(best.params)} ({self.figure} {best.value:.2f})")
        metrics = self.finished(self.load(best.params, "test"), self.folder / "final")
        completed = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
        record = {
            **self.spec(),
            "command": self.command_line(),
            "objective": f"{self.command.objective} on the validation split",
            "trials": [
                {
                    "number": t.number,
                    "params": t.params,
                    "val": t.value,
                    "run": t.user_attrs["run_dir"],
                }
                for t in completed
            ],
            "best": {"params": best.params, "val": best.value, "run": run_of(best)},
            "final": {"run": "final", "test": metrics[self.command.objective]},
            "promptcl_version": __version__,
        }
        write_json(self.folder / RECORD, record)
        return record

    @property
    def figure(self) -> str:
        return {"faa": "FAA", "hm": "HM"}[self.command.objective]

    def objective(self, params: dict[str, Any], name: str) -> float:
        metrics = self.finished(self.load(params, "val"), self.folder / name)
        if metrics[self.command.objective] is None:
            raise UsageError(
                f"{self.folder / name} reports no {self.figure} to maximise (b2n: no novel "
                "classes with data.all_classes); tune a setting that has one"
            )
        return metrics[self.command.objective]

    def finished(self, config: Any, out: Path) -> dict[str, Any]:
        """The metrics of ``config``'s run in ``out``: read when finished, else run or resumed."""
        done = out / "metrics.json"
        if done.is_file():
            return parse_json(read_text(done))
        return self.command.run(config, out, resume=RunDir(out).is_run())

    def open(self) -> None:
        """Write tune.json's spec, or check that the one there is this tuning's."""
        path = self.folder / RECORD
        if path.is_file():
            saved = parse_json(read_text(path))
            if {k: saved.get(k) for k in self.spec()} != self.spec():
                raise UsageError(
                    f"{self.folder} holds another tuning (its {RECORD} records other --config, "
                    "--set or --range); pass a new --out, or the same options"
                )
            return
        check_new(self.folder, RECORD)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {**self.spec(), "command": self.command_line()})

    def command_line(self) -> str:
        args = ["promptcl", "tune", self.command.name]
        args += ["--config", self.config] if self.config else []
        args += [a for item in self.sets for a in ("--set", item)]
        args += [a for r in self.ranges for a in ("--range", range_text(r))]
        args += ["--trials", str(self.trials), "--sampler-seed", str(self.seed)]
        return shlex.join([*args, "--out", str(self.folder)])


def run_of(trial: Any) -> str:
    """A trial's run directory, relative to the tuning folder."""
    return trial.user_attrs["run_dir"]


def range_text(r: Range) -> str:
    if r.choices:
        return f"{r.key}={','.join(c.replace(',', chr(92) + ',') for c in r.choices)}"
    low, high = (int(r.low), int(r.high)) if r.integer else (r.low, r.high)
    return f"{r.key}={low}:{high}{':log' if r.log else ''}"


def settings(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


__all__ = ["Range", "Tuning"]

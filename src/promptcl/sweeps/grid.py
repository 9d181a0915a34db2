"""A sweep: the grid of ``--set`` values (and ``--config`` files) of one command, one run
directory per point under one sweep folder (named by the point's swept values), and
``sweep.json`` there recording the points and the commands that made them (a grid may grow in
its folder: more seeds, another method). A finished point (metrics.json) is skipped, an
unfinished one resumed from its last checkpoint; points run one after another, ``jobs`` at a
time in subprocesses, or one by index (``--point K``: a SLURM array or torchrun job per
point).

Values: ``--set KEY=A,B,C`` sweeps KEY over A, B and C. A comma inside brackets, braces,
parentheses or quotes does not split (``--set 'tuner.blocks=[0,1],[2,3]'`` is two lists), and
``\\,`` is a comma within a plain value (``--set 'data.template=a\\, b {}'`` is one value).
``--config a.yaml,b.yaml`` sweeps the config file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from promptcl.config import config_differences, to_dict
from promptcl.core.rundir import RunDir
from promptcl.data import build_benchmark, load_labelled
from promptcl.errors import UsageError
from promptcl.files import check_path, parse_json, read_text, write_json
from promptcl.protocols.b2n import load_b2n_config, run_b2n
from promptcl.protocols.continual import load_config, run
from promptcl.version import __version__

SWEEP = "sweep.json"
OPENING, CLOSING, QUOTES = "[{(", "]})", "'\""


@dataclass(frozen=True)
class Command:
    """What sweeps and tuning need of ``promptcl run`` or ``promptcl b2n``."""

    name: str
    load: Callable[[Path | None, Sequence[str]], Any]  # (config file, overrides) -> config
    run: Callable[..., dict[str, Any] | None]  # (config, out, resume=) -> metrics.json
    objective: str  # the metrics.json figure that tuning maximises
    data: Callable[[Any, str], Any]  # (config, split) -> its data with that evaluation split


COMMANDS = {
    "run": Command(
        "run",
        load_config,
        run,
        "faa",
        lambda c, split: build_benchmark(c.benchmark, replace(c.data, eval_split=split), c.seed),
    ),
    "b2n": Command(
        "b2n",
        load_b2n_config,
        run_b2n,
        "hm",
        lambda c, split: load_labelled(c.benchmark, c.data.root, split, c.data.template),
    ),
}


def split_values(text: str) -> list[str]:
    """The values of ``A,B,C``: commas split outside brackets and quotes; ``\\,`` is a comma."""
    values, current, depth, quote, i = [], [], 0, None, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1 : i + 2] == ",":
            current.append(",")
            i += 2
            continue
        if quote is not None:
            quote = None if c == quote else quote
        elif c in QUOTES:
            quote = c
        elif c in OPENING or c in CLOSING:
            depth += 1 if c in OPENING else -1
        elif c == "," and depth == 0:
            values.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    return [*values, "".join(current)]


def parse_axes(items: Sequence[str], option: str = "--set") -> list[tuple[str, list[str]]]:
    """(key, values) of each ``KEY=A,B,...``; one-line errors for a missing ``=``, an empty value
    among several and a key given twice."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"{option} {item!r} is not KEY=VALUE[,VALUE...]; write it so")
        values = split_values(text)
        if len(values) > 1 and not all(v.strip() for v in values):
            raise UsageError(
                f"{option} {item!r} has an empty value; remove the stray comma (a comma within a "
                "value is written \\,)"
            )
        if key in (k for k, _ in axes):
            raise UsageError(f"{option} gives {key} twice; list its values once: {key}=A,B")
        axes.append((key, values))
    return axes


def slug(value: str) -> str:
    """A value as part of a folder name: letters, digits and ._+- kept, at most 40 of them;
    when anything was replaced or cut, a digest of the whole value follows, so that two values
    never share a folder."""
    kept = re.sub(r"[^A-Za-z0-9._+-]+", "_", value)[:40]
    if kept == value:
        return kept
    return f"{kept}~{hashlib.sha256(value.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its config file and every --set override; ``name`` is its folder."""

    index: int
    name: str
    config: str | None
    sets: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "set": list(self.sets)}


def grid(
    configs: Sequence[str], axes: Sequence[tuple[str, list[str]]], named: Sequence[str] = ()
) -> list[Point]:
    """The points of the product of ``configs`` (one file, or none: ``[]``) and ``axes``, the
    first axis outermost. A point's name is KEY=VALUE of each swept axis and of each key in
    ``named`` ("config" for the file), or ``run``: the same values name the same folder in any
    grid, so a grid can grow in its folder."""
    keys = [key for key, _ in axes]
    combos = itertools.product(configs or [None], *(values for _, values in axes))
    points = []
    for index, (config, *values) in enumerate(combos):
        swept = [("config", Path(config).stem)] if len(configs) > 1 or "config" in named else []
        swept += [
            (k, v) for (k, vs), v in zip(axes, values, strict=True) if len(vs) > 1 or k in named
        ]
        name = "-".join(f"{k}={slug(v)}" for k, v in swept) or "run"
        sets = tuple(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        points.append(Point(index, name, config, sets))
    return points


@dataclass
class Sweep:
    """A grid of one command under ``folder``; ``argv`` is the sweep command's arguments."""

    command: Command
    folder: Path
    points: list[Point]
    argv: list[str]

    @classmethod
    def from_args(
        cls,
        command: str,
        config: str | None,
        sets: Sequence[str],
        folder: Path | None,
        named: Sequence[str] = (),
    ) -> Sweep:
        """The sweep of a command line, every point's config checked (one-line errors);
        ``named``: keys in every point's name, swept or not."""
        if folder is None:
            raise UsageError("pass --out SWEEP_DIR: the folder of the sweep's run directories")
        check_path(folder, "--out")
        configs = [] if config is None else split_values(config)
        if any(not c.strip() for c in configs):
            raise UsageError(f"--config {config!r} has an empty file name; remove the comma")
        argv = [command, *(["--config", config] if config else [])]
        argv += [arg for item in sets for arg in ("--set", item)] + ["--out", str(folder)]
        argv += ["--name-keys", ",".join(named)] if named else []
        axes = parse_axes(sets)
        unknown = set(named) - {"config", *(key for key, _ in axes)}
        if unknown:
            raise UsageError(
                f"--name-keys {','.join(sorted(unknown))}: not a --set key (or config); "
                "name only keys the grid sets"
            )
        sweep = cls(COMMANDS[command], folder, grid(configs, axes, named), argv)
        names = [p.name for p in sweep.points]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise UsageError(f"two points make the folder {twice}; list each value once")
        for point in sweep.points:
            try:
                sweep.config(point)
            except UsageError as err:
                raise UsageError(f"point {point.name}: {err}") from None
        return sweep

    def config(self, point: Point) -> Any:
        return self.command.load(point.config, list(point.sets))

    def command_line(self) -> str:
        return shlex.join(["promptcl", "sweep", *self.argv])

    def open(self, machine: str) -> None:
        """Write sweep.json, or add this grid to the one there: its points, and its command
        when new. A point named as one there must have been made with the same settings."""
        path = self.folder / SWEEP
        record = {"protocol": self.command.name, "commands": [], "points": []}
        if path.is_file():
            record = read_sweep(self.folder)
        else:
            check_new(self.folder, SWEEP)
        if record.get("protocol") != self.command.name:
            raise UsageError(
                f"{self.folder} is a sweep of promptcl {record.get('protocol')}; pass a new --out"
            )
        saved = {p["name"]: p for p in record["points"]}
        for point in self.points:
            if point.name in saved and not self.same_settings(saved[point.name], point):
                raise UsageError(
                    f"{self.folder / point.name} was made with other settings ({SWEEP} records "
                    "them); pass a new --out, or the same --config/--set"
                )
        added = [p.to_dict() for p in self.points if p.name not in saved]
        if added or self.command_line() not in record["commands"]:
            self.folder.mkdir(parents=True, exist_ok=True)
            commands = list(dict.fromkeys([*record["commands"], self.command_line()]))
            write_json(
                path,
                {
                    **record,
                    "commands": commands,
                    "points": [*record["points"], *added],
                    "machine": record.get("machine", machine),
                    "promptcl_version": __version__,
                },
            )

    def same_settings(self, saved: dict[str, Any], point: Point) -> bool:
        """Whether a point of sweep.json was made as ``point`` would be: the same record, or
        the same --set values with a config file elsewhere (another checkout, or the shipped
        name of a path) that loads to a config the run would resume with (``config_differences``:
        the name and the devices aside)."""
        if saved == point.to_dict():
            return True
        if saved["set"] != list(point.sets) or None in (saved["config"], point.config):
            return False
        try:
            made = self.command.load(saved["config"], saved["set"])
        except UsageError as err:
            raise UsageError(
                f"{self.folder / point.name} was made from {saved['config']}, which no longer "
                f"loads ({err}); restore it, or pass a new --out"
            ) from None
        return not config_differences(to_dict(made), to_dict(self.config(point)))

    def point(self, index: int) -> Point:
        if not 0 <= index < len(self.points):
            raise UsageError(
                f"--point {index}: the sweep has {len(self.points)} points "
                f"(0 to {len(self.points) - 1}); --list shows them"
            )
        return self.points[index]

    def status(self, point: Point) -> str:
        """finished, unfinished (a run directory to resume) or new."""
        out = RunDir(self.folder / point.name)
        if (out.path / "metrics.json").is_file():
            return "finished"
        return "unfinished" if out.is_run() else "new"

    def run_point(self, point: Point) -> str:
        """Run (or resume, or skip) one point in this process; its status before."""
        status = self.status(point)
        if status != "finished":
            out = self.folder / point.name
            self.command.run(self.config(point), out, resume=status == "unfinished")
        return status

    def run_parallel(self, points: Sequence[Point], jobs: int, say: Callable[[str], None]) -> list:
        """Run ``points`` in subprocesses (``promptcl sweep ... --point K``), ``jobs`` at a
        time, each one's output in logs/NAME.log; after a failure no new point starts. Returns
        the failed points' (name, log)."""
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
        pending, running, failed = list(points), {}, []
        try:
            while pending or running:
                while pending and len(running) < jobs and not failed:
                    point = pending.pop(0)
                    log = logs / f"{point.name}.log"
                    with log.open("w") as f:
                        args = [*self.argv, "--point", str(point.index)]
                        running[point] = subprocess.Popen(
                            [sys.executable, "-m", "promptcl", "sweep", *args],
                            stdout=f,
                            stderr=subprocess.STDOUT,
                            env=env,
                        )
                for point, process in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[point]
                    log = logs / f"{point.name}.log"
                    if process.returncode == 0:
                        say(f"point {point.name}: finished (log: {log})")
                    else:
                        failed.append((point.name, log))
                        say(f"point {point.name}: failed, exit {process.returncode} (log: {log})")
                if failed:
                    pending.clear()
                time.sleep(0.2)
        finally:  # Ctrl-C or SIGTERM: the points running are stopped, to be resumed
            for process in running.values():
                process.terminate()
            for process in running.values():
                process.wait()
        return failed


def check_new(folder: Path, record: str) -> None:
    """Refuse a folder of other files (no ``record`` file there) for a sweep or a tuning."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} exists and holds no {record}; pass a new --out")


def read_sweep(folder: Path) -> dict[str, Any]:
    """A sweep folder's sweep.json; one-line errors."""
    path = folder / SWEEP
    try:
        data = parse_json(read_text(path))
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); restore it") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("points", "commands")
    ):
        raise UsageError(f"{path} lacks its list of points or commands; restore it")
    return data


__all__ = ["COMMANDS", "SWEEP", "Command", "Point", "Sweep", "read_sweep"]

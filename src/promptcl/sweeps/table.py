"""``promptcl table``: finished runs (run directories, and sweep folders expanded to their
points) grouped by method, benchmark and the other config keys that differ between them, with
the mean ± sample standard deviation over seeds of each figure, as markdown, CSV or LaTeX.

A key is a column when it tells runs of one method and benchmark apart; the settings' name
(``config``, the --config a run came from) is one when it does. Seeds and the data root never
group runs.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import torch

from promptcl.core.rundir import RunDir
from promptcl.engine import cpu_has_bf16
from promptcl.errors import UsageError
from promptcl.models.base import read_json_file
from promptcl.sweeps.grid import SWEEP, read_sweep

NOT_GROUPING = {"seed", "data.root", "kind", "promptcl_version", "train.progress"}
# (header, metrics.json key) of each kind's figures, in %
FIGURES = {
    "continual": [("FAA", "faa"), ("CAA", "caa"), ("FM", "fm"), ("task-id acc", "task_id_acc")],
    "base-to-novel": [("base", "base_acc"), ("novel", "novel_acc"), ("HM", "hm")],
}
FORMATS = ("markdown", "csv", "latex")


def machine() -> str:
    """This machine: CPU (capability, bf16), cores, GPU, torch version and threads, date."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    bf16 = "native bf16" if cpu_has_bf16() else "no native bf16"
    return (
        f"{cpu} ({torch.backends.cpu.get_cpu_capability()}, {bf16}), {os.cpu_count()} cores, "
        f"{device}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {date.today().isoformat()}"
    )


def mean_std(values: Sequence[float | None], digits: int = 2) -> str:
    """``mean ± std`` (sample standard deviation) of the values that are not None; one value
    alone; ``-`` for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Run:
    """A finished run directory: its kind, config.json as dotted keys, metrics.json."""

    path: Path
    kind: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def train_seconds(self) -> float:
        """A b2n run that evaluated an earlier run's prompts (--prompts) reports that run's
        training."""
        source = self.metrics.get("prompts_from")
        if source:
            path = Path(source).parent / "metrics.json"
            return read_json_file(path, "the metrics of the run the prompts came from")[
                "train_seconds"
            ]
        return self.metrics["train_seconds"]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class Runs:
    """The finished runs a table reads, in the order given, and what else it was given."""

    runs: list[Run] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # their sweep.json


def run_folders(path: Path, found: Runs) -> list[Path]:
    """A run directory itself, or a sweep folder's points (its sweep.json recorded)."""
    if (path / SWEEP).is_file():
        sweep = read_sweep(path)
        found.sweeps.append(sweep)
        return [path / point["name"] for point in sweep["points"]]
    if RunDir(path).is_run():
        return [path]
    raise UsageError(
        f"{path} is neither a run directory (config.json) nor a sweep folder ({SWEEP}); pass "
        "the --out of promptcl run, b2n or sweep"
    )


def collect(paths: Sequence[Path]) -> Runs:
    """The runs under ``paths``; those without metrics.json are listed as unfinished."""
    found = Runs()
    for folder in (f for path in paths for f in run_folders(path, found)):
        run_dir = RunDir(folder)
        if not (folder / "metrics.json").is_file():
            found.unfinished.append(folder)
            continue
        metrics = read_json_file(folder / "metrics.json", "the run's figures")
        found.runs.append(Run(folder, run_dir.kind(), flatten(run_dir.read_config()), metrics))
    if not found.runs:
        raise UsageError(f"no finished run under {', '.join(map(str, paths))}; run them first")
    kinds = {run.kind for run in found.runs}
    if len(kinds) > 1:
        raise UsageError(f"the runs mix {' and '.join(sorted(kinds))} runs; tabulate each apart")
    return found


def group_keys(runs: Sequence[Run]) -> list[str]:
    """method and benchmark, then each key whose values differ among runs of one method and
    benchmark ("name", the config, included), in config.json's order."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    differing = [
        k
        for k in keys
        if k not in NOT_GROUPING and len({repr(run.config.get(k)) for run in runs}) > 1
    ]
    within = []
    for key in differing:
        if key in ("method", "benchmark"):
            continue
        seen: dict[tuple, set[str]] = {}
        for run in runs:
            at = (run.config.get("method"), run.config.get("benchmark"))
            seen.setdefault(at, set()).add(repr(run.config.get(key)))
        if any(len(values) > 1 for values in seen.values()):
            within.append(key)
    return ["method", "benchmark", *within]


def groups(runs: Sequence[Run]) -> tuple[list[str], list[tuple[tuple, list[Run]]]]:
    """The grouping keys, and each group's values of them with its runs, in first-seen order."""
    keys = group_keys(runs)
    grouped: dict[tuple, list[Run]] = {}
    for run in runs:
        grouped.setdefault(tuple(run.config.get(k) for k in keys), []).append(run)
    return keys, list(grouped.items())


def figure(runs: Sequence[Run], key: str | None) -> list[float]:
    """The runs' values of metrics.json's ``key`` (None: train seconds) that are not None."""
    values = [r.train_seconds if key is None else r.metrics.get(key) for r in runs]
    return [v for v in values if v is not None]


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def header_of(key: str) -> str:
    return "config" if key == "name" else key


@dataclass
class Table:
    """Rows of one kind of run: group columns, seeds, figures, trained params, train s."""

    kind: str
    keys: list[str]
    rows: list[tuple[tuple, list[Run]]]

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Table:
        keys, rows = groups(runs)
        return cls(runs[0].kind, keys, rows)

    def header(self, seeds: bool = True) -> list[str]:
        figures = [name for name, _ in FIGURES[self.kind]]
        return [*map(header_of, self.keys), *["seeds"] * seeds, *figures, "trained params",
                "train s"]  # fmt: skip

    def markdown_rows(self, seeds: bool = True) -> list[list[str]]:
        return [
            [
                *map(cell, values),
                *([" ".join(str(r.metrics["seed"]) for r in runs)] if seeds else []),
                *(mean_std(figure(runs, key)) for _, key in FIGURES[self.kind]),
                f"{runs[0].metrics['trainable_params']:,}",
                mean_std(figure(runs, None), 0),
            ]
            for values, runs in self.rows
        ]

    def markdown(self, seeds: bool = True) -> str:
        return markdown_table(self.header(seeds), self.markdown_rows(seeds))

    def csv(self) -> str:
        """One column per figure's mean and one per its standard deviation (empty: one seed)."""
        figures = FIGURES[self.kind] + [("train s", None)]
        header = [*map(header_of, self.keys), "seeds", "runs"]
        header += [h for name, _ in figures for h in (name, f"{name} std")] + ["trained params"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for values, runs in self.rows:
            row = [*map(cell, values), " ".join(str(r.metrics["seed"]) for r in runs), len(runs)]
            for _, key in figures:
                found = figure(runs, key)
                row.append(f"{statistics.mean(found):.4f}" if found else "")
                row.append(f"{statistics.stdev(found):.4f}" if len(found) > 1 else "")
            writer.writerow([*row, runs[0].metrics["trainable_params"]])
        return out.getvalue().rstrip("\n")

    def latex(self) -> str:
        """A booktabs tabular: group columns left, figures right, ± as $\\pm$."""
        header = self.header()
        align = "l" * (len(self.keys) + 1) + "r" * (len(header) - len(self.keys) - 1)
        lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule"]
        lines.append(" & ".join(map(latex_escape, header)) + " \\\\")
        lines.append("\\midrule")
        for row in self.markdown_rows():
            cells = [latex_escape(c).replace("±", "$\\pm$").replace(",", "{,}") for c in row]
            lines.append(" & ".join(cells) + " \\\\")
        return "\n".join([*lines, "\\bottomrule", "\\end{tabular}"])


LATEX_SPECIAL = {c: f"\\{c}" for c in "&%$#_{}"} | {"~": "\\textasciitilde{}", "^": "\\^{}",
                                                   "\\": "\\textbackslash{}"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def render(found: Runs, fmt: str, command: str) -> str:
    """The table of ``found`` in ``fmt`` with a footer: the runs left out, the machine (of
    each sweep, else this one) and the commands (each sweep's, then ``command``)."""
    table = Table.of(found.runs)
    body = {"markdown": table.markdown, "csv": table.csv, "latex": table.latex}[fmt]()
    machines = list(dict.fromkeys(s["machine"] for s in found.sweeps if s.get("machine")))
    footer = []
    if found.unfinished:
        names = ", ".join(str(p) for p in found.unfinished)
        footer.append(f"Left out, not finished: {names}.")
    footer.append(f"Machine: {'; '.join(machines) or machine()}.")
    commands = dict.fromkeys(c for s in found.sweeps for c in s["commands"])
    footer += [f"Command: `{c}`" for c in [*commands, command]]
    if fmt == "markdown":
        return "\n".join([body, "", *footer])
    mark = "#" if fmt == "csv" else "%"
    return "\n".join([body, *(f"{mark} {line}" for line in footer)])


__all__ = ["FORMATS", "Run", "Runs", "Table", "collect", "machine", "markdown_table", "mean_std",
           "render"]  # fmt: skip

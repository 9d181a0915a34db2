"""Helpers shared by the benchmark scripts: machine description, tables, the marked sections of
README.md and docs/*.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import torch

from promptcl.engine import cpu_has_bf16

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
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


def section_files(name: str) -> list[Path]:
    """The pages (README.md, docs/*.md) holding <!-- name:start --> ... <!-- name:end -->."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [page for page in pages if {start, end} <= set(page.read_text("utf-8").splitlines())]


def update_readme_section(name: str, text: str) -> None:
    """Replace the text between <!-- name:start --> and <!-- name:end --> in each page that
    holds those markers: the docs page of the table (docs/results.md), and the README for the
    table it shows."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pages = section_files(name)
    if not pages:
        raise SystemExit(f"no page (README.md, docs/*.md) has {start} ... {end} markers")
    for page in pages:
        head, rest = page.read_text(encoding="utf-8").split(start, 1)
        _, tail = rest.split(end, 1)
        page.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")

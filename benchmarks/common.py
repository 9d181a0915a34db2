"""Helpers shared by the benchmark scripts: machine description and tables (those of
``promptcl table``), README sections."""

from __future__ import annotations

from pathlib import Path

from promptcl.sweeps.table import machine, markdown_table, mean_std

REPO = Path(__file__).resolve().parents[1]


def update_readme_section(name: str, text: str, readme: Path = REPO / "README.md") -> None:
    """Replace the text between <!-- name:start --> and <!-- name:end --> in the README."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = readme.read_text(encoding="utf-8")
    if start not in content or end not in content:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}", encoding="utf-8")


__all__ = ["REPO", "machine", "markdown_table", "mean_std", "update_readme_section"]

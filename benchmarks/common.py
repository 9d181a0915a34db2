"""Helpers shared by the benchmark scripts: machine description and tables (those of
``promptcl table``), the marked sections of README.md and docs/*.md."""

from __future__ import annotations

from pathlib import Path

from promptcl.sweeps.table import machine, markdown_table, mean_std

REPO = Path(__file__).resolve().parents[1]


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


__all__ = [
    "REPO",
    "machine",
    "markdown_table",
    "mean_std",
    "section_files",
    "update_readme_section",
]

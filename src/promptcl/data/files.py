"""The one data-root rule and the readers of data files shared by the benchmarks.

Every benchmark reads its files from a folder under ``data.root`` (or $PROMPTCL_DATA) found by
``data_folder``; a missing root, folder or file is a one-line UsageError saying what belongs
where.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcl.errors import UsageError
from promptcl.files import read_text


def missing(benchmark: str, path: Path, holds: str) -> UsageError:
    """The error for a data folder that is absent or lacks files; ``holds`` says what goes in."""
    return UsageError(f"{benchmark} not found under {path}: put {holds} there or fix data.root")


def data_folder(
    root: str | None, benchmark: str, folder: str, holds: str, files: Sequence[str] = ()
) -> Path:
    """``root/folder`` (``root`` itself when ``folder`` is empty), checked to exist and to hold
    ``files``; ``holds`` says what the folder holds, for the error messages."""
    if root is None:
        where = f"DIR/{folder}" if folder else "DIR"
        raise UsageError(
            f"benchmark {benchmark} needs a data root: pass --set data.root=DIR or set "
            f"PROMPTCL_DATA ({where} holds {holds})"
        )
    path = Path(root).expanduser() / folder
    if not path.is_dir() or not all((path / f).exists() for f in files):
        raise missing(benchmark, path, holds)
    return path


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"{path} not found; check data.root")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path} is not valid JSON ({err}); replace it with the original"
        ) from None


def read_csv(
    path: Path, columns: Sequence[str], hint: str, jsonl_hint: str | None = None
) -> list[tuple[str, ...]]:
    """The ``columns`` of each row of a UTF-8 CSV file with a header; ``hint`` says how to name
    other columns, ``jsonl_hint`` (when given) what to do with a file of JSON lines."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    try:
        header = reader.fieldnames
        if jsonl_hint and header and header[0].lstrip().startswith("{"):
            raise UsageError(f"{path} holds JSON lines, not CSV; {jsonl_hint}")
        if header is None or not set(columns) <= set(header):
            raise UsageError(
                f"{path} has no columns {', '.join(map(repr, columns))} (found {header}); {hint}"
            )
        rows = [tuple(row[c] for c in columns) for row in reader]
    except csv.Error as err:
        raise UsageError(f"{path} is not valid CSV ({err}); fix the file") from None
    if any(None in row for row in rows):
        raise UsageError(f"{path} has rows with fewer fields than its header; fix the file")
    return rows

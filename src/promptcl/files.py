"""Files of run directories and checkpoints: strict JSON written atomically, text read as UTF-8
with one-line errors, and the lock that keeps two runs out of one directory."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptcl.errors import UsageError

LOCK = ".lock"
MAX_DEPTH = 64  # of JSON that promptcl reads back: its own files nest a few levels
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
BRACKETS = re.compile(r"[\[\]{}]")


def strict(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict(v) for v in data]
    return data


def dumps(data: Any, indent: int | None = None) -> str:
    return json.dumps(strict(data), indent=indent, allow_nan=False)


def parse_json(text: str) -> Any:
    """JSON text nested at most MAX_DEPTH levels, checked before parsing (a deeper file would
    exhaust the parser's recursion); ValueError for text that is not that."""
    depth = 0
    for bracket in BRACKETS.findall(STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(text)


def read_text(path: Path) -> str:
    """A text file's content; a file that is not UTF-8 is a one-line error naming the byte."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as err:
        raise UsageError(f"cannot read {path} ({err.strerror}); check the path") from None


def write_text(path: Path, text: str) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one; a
    failed write (a full disk, ``path`` a folder) raises its OSError and leaves no temp file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, dumps(data, indent=2) + "\n")


def check_path(path: Path, option: str) -> None:
    """Refuse a path the system cannot even look up (a name too long, a folder that cannot be
    searched)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a new path, or one under a file
        pass
    except OSError as err:
        raise UsageError(f"cannot use {option} {path} ({err.strerror}); pass another") from None


def check_output(path: Path | None) -> None:
    """Refuse, before any work, an --output that cannot be written. Outputs go to a new path or
    over a regular file (never over a device, pipe or socket), in a folder where a file can be
    created: tried, since permissions alone do not say it (root, read-only mounts)."""
    if path is None:
        return
    check_path(path, "--output")
    why = None
    if path.is_dir():
        why = f"{path} is a folder"
    elif os.path.lexists(path) and not path.is_file():
        why = f"{path} is not a regular file (a device, pipe, socket or broken link)"
    elif not path.parent.is_dir():
        why = f"{path.parent} does not exist"
    else:
        try:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as err:
            why = f"{path.parent} is not writable ({err.strerror})"
    if why is not None:
        raise UsageError(f"cannot write --output {path}: {why}; pass a file in a writable folder")


def write_output(path: Path, text: str) -> None:
    """Write an --output (checked by ``check_output`` before the work); one-line errors."""
    try:
        write_text(path, text)
    except OSError as err:
        raise UsageError(
            f"cannot write --output {path} ({err.strerror}); nothing was written"
        ) from None


def check_out(folder: Path, hint: str) -> None:
    """Refuse, before any work, a run directory that is a file, cannot be made, or already holds
    files (``hint`` says what to do then). Nothing is written."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder; pass another --out")
    if folder.is_dir() and any(p.name != LOCK for p in folder.iterdir()):
        raise UsageError(f"{folder} already exists; {hint}")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot create {folder}: {parent} is not a writable folder; pass another --out"
        )


def _open_lock(path: Path) -> Any:
    """``path`` opened and flock-ed (exclusive, non-blocking), or a one-line error naming the
    process that holds it."""
    import fcntl  # POSIX: the one non-portable piece of promptcl

    while True:
        try:
            f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held by run_lock)
        except OSError as err:
            raise UsageError(
                f"cannot write to {path.parent} ({err.strerror}); pass another --out"
            ) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UsageError(
                f"{path.parent} is in use by {holder}; wait for it to finish"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        f.close()  # its holder removed that file as we locked it: lock the current one


@contextmanager
def run_lock(folder: Path, hint: str | None = None) -> Iterator[None]:
    """Hold ``folder/.lock`` while a run writes there: an exclusive flock, which the system
    releases when a process dies, on a file naming the holding process. A lock held by a live
    process is a one-line error; the file of a killed run is taken over, saying so. With a
    ``hint``, the folder is checked again under the lock (``check_out``): a run started at the
    same moment may have filled it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {folder} ({err.strerror}); pass another --out") from None
    path = folder / LOCK
    with _open_lock(path) as f:
        f.seek(0)
        left = f.read().strip()
        if left:  # written by a run that ended without removing it: a killed one
            print(f"promptcl: {path} was left by {left}, which was killed; taking it over",
                  file=sys.stderr)  # fmt: skip
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            if hint is not None:
                check_out(folder, hint)
            yield
        finally:
            f.truncate(0)
            path.unlink(missing_ok=True)

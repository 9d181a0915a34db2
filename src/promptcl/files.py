"""Files of run directories and checkpoints: strict JSON written atomically, and the lock that
keeps two runs out of one directory."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptcl.errors import UsageError

LOCK = ".lock"


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


def write_text(path: Path, text: str) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, dumps(data, indent=2) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (an exclusive create) while a run writes there. Another live
    process holding it is a one-line error; a lock left by a killed process on this host is
    taken over, saying so."""
    folder.mkdir(parents=True, exist_ok=True)
    path, me = folder / LOCK, f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid, _, host = path.read_text(encoding="utf-8").partition(" ")
            if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
                raise UsageError(
                    f"{folder} is in use by process {pid} on {host or 'an unknown host'}; wait "
                    f"for it, or if that run was killed elsewhere remove {path}"
                ) from None
            print(f"promptcl: {path} was left by killed process {pid}; taking it over",
                  file=sys.stderr)  # fmt: skip
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(me)
        break
    else:  # another process took the stale lock first
        raise UsageError(f"{folder} is in use by another process; wait for it")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)

"""The package layering of docs/ARCHITECTURE.md holds: no module imports from a floor above its
own, and packages on one floor do not import each other in a circle. Imports are read from the
source (every ``import`` and ``from ... import`` of promptcl, at any depth of the file)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "promptcl"

# docs/ARCHITECTURE.md, bottom to top: a unit imports only from its own floor or below
FLOORS = [
    ["metrics", "errors", "version"],
    ["registry", "files", "report"],
    ["backbones"],
    ["engine", "loggers"],
    ["config", "runtime"],
    ["data", "taskid"],
    ["core", "tuners", "dual"],
    ["protocols"],
    ["models", "sweeps"],
    ["cli", "__init__", "__main__"],
]
FLOOR = {unit: n for n, units in enumerate(FLOORS) for unit in units}


def unit_of(module: str) -> str:
    """promptcl.core.loop -> core; promptcl.engine -> engine; promptcl -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, str]]:
    """(file, importing unit, imported unit) for every import of promptcl in src/promptcl."""
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "promptcl":  # from promptcl import metrics, ...
                    names = [f"promptcl.{alias.name}" for alias in node.names]
            for name in names:
                if name.startswith("promptcl"):
                    found.append((str(rel), unit_of(module), unit_of(name)))
    return found


def test_every_package_has_a_floor():
    units = {unit_of(".".join(p.relative_to(SRC.parent).with_suffix("").parts))
             for p in SRC.rglob("*.py")}  # fmt: skip
    assert units <= set(FLOOR), sorted(units - set(FLOOR))


def test_nothing_imports_from_a_floor_above():
    upward = [(f, a, b) for f, a, b in imports() if FLOOR[b] > FLOOR[a]]
    assert not upward, upward


def test_packages_on_one_floor_do_not_import_each_other_both_ways():
    edges = {(a, b) for _, a, b in imports() if a != b}
    both = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not both, both


def test_the_core_knows_no_method_and_no_protocol():
    named = {b for _, a, b in imports() if a == "core"}
    assert not named & {"tuners", "dual", "taskid", "protocols", "models"}, named

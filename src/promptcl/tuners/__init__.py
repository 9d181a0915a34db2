"""Methods by name. A method is a folder here plus one ``register_tuner`` line in it."""

from __future__ import annotations

import importlib
import pkgutil

from promptcl.registry import Registry
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput

TUNERS: Registry[type[Tuner]] = Registry("method")


def register_tuner(cls: type[Tuner]) -> type[Tuner]:
    return TUNERS.add(cls.name, cls, cls.description)


def get_tuner(name: str) -> type[Tuner]:
    return TUNERS.get(name)


# every method's package registers itself when imported: a new folder here is all it takes
for _method in pkgutil.iter_modules(__path__):
    if _method.ispkg:
        importlib.import_module(f"{__name__}.{_method.name}")

__all__ = ["TUNERS", "Batch", "TaskData", "Tuner", "TunerOutput", "get_tuner", "register_tuner"]

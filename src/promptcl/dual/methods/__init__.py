"""Dual-encoder methods by name: a module here that ends with its ``register_method`` line."""

from __future__ import annotations

import importlib
import pkgutil

from promptcl.dual.methods.base import DUAL_METHODS, DualMethod, get_method, register_method

# every method's module registers itself when imported: a new module here is all it takes
for _method in pkgutil.iter_modules(__path__):
    if _method.name != "base":
        importlib.import_module(f"{__name__}.{_method.name}")

__all__ = ["DUAL_METHODS", "DualMethod", "get_method", "register_method"]

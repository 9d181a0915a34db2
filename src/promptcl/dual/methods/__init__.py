"""Dual-encoder methods by name: a module here that ends with its ``register_method`` line."""

from __future__ import annotations

# importing a method's module registers it
from promptcl.dual.methods import coop, ivlp, maple, mpl, zeroshot  # noqa: F401
from promptcl.dual.methods.base import DUAL_METHODS, DualMethod, get_method, register_method

__all__ = ["DUAL_METHODS", "DualMethod", "get_method", "register_method"]

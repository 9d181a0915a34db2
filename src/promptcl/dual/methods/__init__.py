"""Dual-encoder methods by name: a module here plus one ``register_method`` line below."""

from __future__ import annotations

from promptcl.dual.methods.base import DualMethod
from promptcl.dual.methods.coop import CoOp, CoOpConfig
from promptcl.dual.methods.ivlp import IVLP, IVLPConfig
from promptcl.dual.methods.maple import MaPLe, MaPLeConfig
from promptcl.dual.methods.mpl import MPL, MPLConfig
from promptcl.dual.methods.zeroshot import ZeroShot, ZeroShotConfig
from promptcl.registry import Registry

# name -> (config dataclass, method class)
DUAL_METHODS: Registry[tuple[type, type[DualMethod]]] = Registry("dual-encoder method")


def register_method(name: str, config_class: type, method_class: type[DualMethod]) -> None:
    DUAL_METHODS.add(name, (config_class, method_class), method_class.description)


def get_method(name: str) -> tuple[type, type[DualMethod]]:
    return DUAL_METHODS.get(name)


register_method("zeroshot", ZeroShotConfig, ZeroShot)
register_method("coop", CoOpConfig, CoOp)
register_method("ivlp", IVLPConfig, IVLP)
register_method("maple", MaPLeConfig, MaPLe)
register_method("mpl", MPLConfig, MPL)

__all__ = ["DUAL_METHODS", "DualMethod", "get_method", "register_method"]

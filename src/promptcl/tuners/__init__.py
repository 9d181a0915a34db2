"""Methods by name. A method is a folder here plus one ``register_tuner`` line in it."""

from __future__ import annotations

from promptcl.errors import UsageError
from promptcl.tuners.base import Batch, Tuner, TunerOutput

TUNERS: dict[str, type[Tuner]] = {}


def register_tuner(cls: type[Tuner]) -> type[Tuner]:
    if cls.name in TUNERS:
        raise ValueError(f"method {cls.name!r} is already registered")
    TUNERS[cls.name] = cls
    return cls


def get_tuner(name: str) -> type[Tuner]:
    if name not in TUNERS:
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(TUNERS)}")
    return TUNERS[name]


# importing a method's package registers it
from promptcl.tuners import (  # noqa: E402, F401
    adapter,
    dualprompt,
    finetune,
    hash,
    hide,
    l2p,
    linear,
    lora,
    ncm,
    norga,
    softtf,
    wsn,
)

__all__ = ["TUNERS", "Batch", "Tuner", "TunerOutput", "get_tuner", "register_tuner"]

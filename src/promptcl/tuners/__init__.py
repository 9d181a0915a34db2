"""Methods by name. A method is a folder here plus one ``register_tuner`` line in it."""

from __future__ import annotations

from promptcl.registry import Registry
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput

TUNERS: Registry[type[Tuner]] = Registry("method")


def register_tuner(cls: type[Tuner]) -> type[Tuner]:
    return TUNERS.add(cls.name, cls, cls.description)


def get_tuner(name: str) -> type[Tuner]:
    return TUNERS.get(name)


# importing a method's package registers it
from promptcl.tuners import (  # noqa: E402, F401
    adapter,
    coda,
    dualprompt,
    finetune,
    hash,
    hide,
    l2p,
    lda,
    linear,
    lora,
    ncm,
    norga,
    ranpac,
    softtf,
    wsn,
)

__all__ = ["TUNERS", "Batch", "TaskData", "Tuner", "TunerOutput", "get_tuner", "register_tuner"]

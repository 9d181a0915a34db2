"""Dual encoders: a query tower (utterance or image) and a label tower (class text) sharing an
embedding space, run block by block so that deep prompts can be injected on both sides.

Prompt tokens live in one region right after a sequence's first token ([CLS] / start of text):

- label side: learned context vectors (CoOp's ctx) replace the word embeddings at positions
  1..n_ctx of the class text before position embeddings are added; they are words of the text,
  so they are pooled like the words they stand for;
- query side: prompt tokens are inserted after the first token at a block's input and are never
  pooled (CLIP's image tower pools [CLS] anyway; mean-pooled text towers leave them out), so an
  empty prompt gives exactly the plain encoder's feature.

At a prompted block a ``PromptStep`` keeps the oldest tokens of the region (all but its ``drop``
newest; ``drop=None`` drops them all: replacement, as in deep VPT and MaPLe) and appends its new
tokens after them (MPL's carry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import freeze
from promptcl.backbones.hf import HFEncoder
from promptcl.errors import UsageError

# sentence-transformers' MultipleNegativesRankingLoss scale for cosine similarities: the fixed
# logit scale of text-text dual encoders (CLIP brings its own learned one, 100 for OpenAI CLIP)
TEXT_LOGIT_SCALE = 20.0


@dataclass(frozen=True)
class PromptStep:
    """What happens to the prompt region at one block's input."""

    tokens: torch.Tensor  # (L, d) shared by the batch, or (B, L, d)
    drop: int | None = None  # newest carried tokens to drop; None: all of them (replace)


@dataclass
class Prompts:
    ctx: torch.Tensor | None = None  # (n_ctx, d_word) label side: replaces words 1..n_ctx
    steps: dict[int, PromptStep] = field(default_factory=dict)  # block index -> step


class Tower(nn.Module):
    """One frozen encoder of a dual encoder. Subclasses set dim, num_blocks, tokenizer and
    max_length (text towers) and implement embed, run_block and head."""

    dim: int
    num_blocks: int

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs -> block-0 input (B, N, d) and keep mask (B, N) (None: all tokens real)."""
        raise NotImplementedError

    def prompt_input(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Prompt tokens entering block ``index`` (a tower may normalise block-0 prompts)."""
        return tokens

    def run_block(self, index: int, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def head(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Last hidden states (B, N, d) -> feature (B, D); ``keep`` marks the poolable tokens."""
        raise NotImplementedError

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        raise UsageError(f"{type(self).__name__} has no word embeddings (not a text tower)")

    def train(self, mode: bool = True) -> Tower:
        return super().train(False)  # frozen: always eval mode


def replace_context(words: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """Word embeddings (B, N, d) with positions 1..n replaced by ctx (n, d) or (B, n, d)."""
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(words.shape[0], -1, -1)
    n = ctx.shape[1]
    return torch.cat([words[:, :1], ctx.to(words.dtype), words[:, 1 + n :]], dim=1)


def apply_step(
    x: torch.Tensor, keep: torch.Tensor | None, carried: int, step: PromptStep, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Keep the oldest ``carried - drop`` prompt tokens at positions 1.., append ``tokens``."""
    B = x.shape[0]
    kept = 0 if step.drop is None else max(carried - step.drop, 0)
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(B, -1, -1)
    x = torch.cat([x[:, : 1 + kept], tokens.to(x.dtype), x[:, 1 + carried :]], dim=1)
    if keep is not None:
        ones = keep.new_ones(B, tokens.shape[1])
        keep = torch.cat([keep[:, : 1 + kept], ones, keep[:, 1 + carried :]], dim=1)
    return x, keep, kept + tokens.shape[1]


def run_tower(
    tower: Tower, inputs: Mapping[str, torch.Tensor], prompts: Prompts, pool_prompts: bool
) -> torch.Tensor:
    """Embed, apply each block's prompt step, run the blocks, pool: features (B, D)."""
    x, keep = tower.embed(inputs, prompts.ctx)
    carried = 0 if prompts.ctx is None else prompts.ctx.shape[-2]
    for index in range(tower.num_blocks):
        step = prompts.steps.get(index)
        if step is not None and (step.tokens.shape[-2] or carried):
            tokens = tower.prompt_input(index, step.tokens)
            x, keep, carried = apply_step(x, keep, carried, step, tokens)
        x = tower.run_block(index, x, keep)
    if carried and not pool_prompts:
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if keep is None else keep
        keep = keep.clone()
        keep[:, 1 : 1 + carried] = False
    return tower.head(x, keep)


class BertTower(Tower):
    """A BERT-family encoder (promptcl's HFEncoder): mean pooling over the real tokens, as
    sentence-transformers does for all-MiniLM-L6-v2."""

    def __init__(self, encoder: HFEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = encoder.tokenizer
        self.dim = encoder.dim
        self.num_blocks = encoder.num_blocks
        self.max_length = encoder.model.config.max_position_embeddings

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ctx is None:
            return self.encoder.embed(inputs)
        ids = inputs["input_ids"]
        words = replace_context(self.word_embeddings(ids), ctx)
        x = self.encoder.model.embeddings(inputs_embeds=words, token_type_ids=torch.zeros_like(ids))
        return x, inputs["attention_mask"].bool()

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.model.embeddings.word_embeddings(ids)

    def run_block(self, index: int, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.encoder.run_block(index, x, keep, None)

    def head(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.encoder.pool(self.encoder.final_norm(x), keep)


class DualEncoder(nn.Module):
    """Scores = logit_scale * cos(f(x), g(class text)). ``query`` and ``label`` may be one
    module (text-text: the same frozen MiniLM encodes utterances and class texts)."""

    def __init__(
        self, query: Tower, label: Tower, logit_scale: float, modality: str, **image: object
    ) -> None:
        super().__init__()
        self.query, self.label = query, label
        self.logit_scale = logit_scale
        self.modality = modality  # of the queries: "text" or "image"
        self.image = image  # image towers: size, mean, std for preprocessing
        freeze(self)

    def encode_queries(
        self, inputs: Mapping[str, torch.Tensor], prompts: Prompts | None = None
    ) -> torch.Tensor:
        """L2-normalised query features (B, D)."""
        features = run_tower(self.query, inputs, prompts or Prompts(), pool_prompts=False)
        return F.normalize(features, dim=-1)

    def encode_labels(
        self, class_tokens: Mapping[str, torch.Tensor], prompts: Prompts | None = None
    ) -> torch.Tensor:
        """L2-normalised class-text features (C, D)."""
        features = run_tower(self.label, class_tokens, prompts or Prompts(), pool_prompts=True)
        return F.normalize(features, dim=-1)

    def scores(self, queries: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * queries @ labels.T  # (B, C)

    def train(self, mode: bool = True) -> DualEncoder:
        return super().train(False)


def text_pair(encoder: HFEncoder, logit_scale: float | None) -> DualEncoder:
    """One frozen BERT-family encoder on both sides."""
    tower = BertTower(encoder)
    return DualEncoder(tower, tower, logit_scale or TEXT_LOGIT_SCALE, "text")


# name -> (one-line description, factory(logit_scale) -> DualEncoder)
DUAL_BACKBONES: dict[str, tuple[str, Callable[[float | None], DualEncoder]]] = {}


def register_dual_backbone(name: str, description: str):
    def decorator(factory: Callable[[float | None], DualEncoder]):
        if name in DUAL_BACKBONES:
            raise ValueError(f"dual backbone {name!r} is already registered")
        DUAL_BACKBONES[name] = (description, factory)
        return factory

    return decorator


@register_dual_backbone("minilm-l6", "packaged all-MiniLM-L6-v2 encodes utterances and class texts")
def _minilm(scale: float | None) -> DualEncoder:
    from promptcl.backbones.hf import load_hf_encoder

    return text_pair(load_hf_encoder("minilm-l6"), scale)


@register_dual_backbone("tiny-bert", "random 2-layer BERT on both sides: tests, smoke runs")
def _tiny_bert(scale: float | None) -> DualEncoder:
    from promptcl.backbones.hf import tiny_bert

    return text_pair(tiny_bert(), scale)


@register_dual_backbone(
    "tiny-clip", "random 2-layer CLIP (32 px images), MiniLM's tokenizer: tests"
)
def _tiny_clip(scale: float | None) -> DualEncoder:
    from promptcl.dual.clip import tiny_clip

    return tiny_clip(scale)


DUAL_PATTERNS = {
    "hf:DIR_OR_HUB_ID": "a BERT-family encoder on both sides (text-text)",
    "clip:DIR_OR_HUB_ID": "a transformers CLIP checkpoint (e.g. openai/clip-vit-base-patch16)",
}


def build_dual_encoder(name: str, logit_scale: float | None = None) -> DualEncoder:
    """From a registered name, ``hf:SOURCE`` or ``clip:SOURCE``; logit_scale None: the
    encoder's own (CLIP's learned scale, TEXT_LOGIT_SCALE for text pairs)."""
    if name in DUAL_BACKBONES:
        return DUAL_BACKBONES[name][1](logit_scale)
    kind, _, source = name.partition(":")
    if kind == "hf" and source:
        from promptcl.backbones.hf import load_hf_encoder

        return text_pair(load_hf_encoder(source), logit_scale)
    if kind == "clip" and source:
        from promptcl.dual.clip import load_clip

        return load_clip(source, logit_scale)
    known = ", ".join([*DUAL_BACKBONES, *DUAL_PATTERNS])
    raise UsageError(f"unknown dual-encoder backbone {name!r}; choose one of: {known}")

"""The one backbone interface: a frozen transformer run block by block.

Every command shares it: continual learning (timm ViTs, Hugging Face encoders, CLIP's image
tower) and dual encoders (two backbones and a scorer, backbones/dual.py). A backbone exposes its
blocks one by one, so that methods can

- add prefix keys/values to a block's attention (prefix tuning: DualPrompt, HiDe, Hash);
- replace the first words of a text by learned context vectors (``Prompts.ctx``: CoOp);
- insert, replace, carry or drop prompt tokens at a block's input (``Prompts.steps``: L2P's
  input prompts, deep prompts of IVLP and MaPLe, MPL's carried prompts);
- edit its linear layers (``linear_paths``: Soft-TF's masks, LoRA, adapters;
  backbones/masked.py);

and it gives the pooled feature of the un-prompted input (the query of L2P, DualPrompt and the
task-identity classifiers).

Prompt tokens live in one region right after the backbone's prefix tokens ([CLS], start of
text, register tokens): positions ``num_prefix_tokens ..``. Context vectors are words of the
text, so they count as the region's first tokens (a deep prompt at block 1 replaces them).

Everything a forward pass depends on besides the inputs (prompts, prefixes, edits, a shared
trunk) is an argument of ``forward`` and reaches ``run_block`` as an argument; nothing is
written onto the module, so ``compile_blocks`` can compile the block computation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from promptcl.backbones.attention import Prefix, PrefixAttention
from promptcl.backbones.masked import NO_EDITS, BlockEdits
from promptcl.errors import UsageError

# a prefix computed from the hidden states entering its block (B, N, d) and their keep mask
PrefixFn = Callable[[torch.Tensor, torch.Tensor | None], Prefix]


@dataclass(frozen=True)
class PromptStep:
    """What happens to the prompt region at one block's input: its oldest ``kept`` tokens stay
    (with their hidden states from the block below), the others are dropped, and ``tokens``
    are appended after the kept ones. ``kept=0`` replaces the region (deep VPT, MaPLe)."""

    tokens: torch.Tensor  # (L, d) shared by the batch, or (B, L, d)
    kept: int = 0


@dataclass
class Prompts:
    """Everything inserted into one forward pass, besides prefixes."""

    ctx: torch.Tensor | None = None  # (n_ctx, d) or (B, n_ctx, d): replaces words 1..n_ctx
    steps: Mapping[int, PromptStep] = field(default_factory=dict)  # block index -> step
    pooled: bool = True  # False: the prompt region is left out of the returned keep mask


NO_PROMPTS = Prompts()


@dataclass
class Trunk:
    """Hidden states entering block ``depth``, shared by forwards that differ only from block
    ``depth`` on (same prompts and prefixes below it), e.g. Gradient ID's superposed and final
    passes. Pass one ``Trunk(depth)`` to each of them (``Backbone.forward(..., trunk=)``): the
    first forward on an inputs mapping stores them (detached), later forwards on the same
    mapping object start there. The caller owns it; the backbone keeps nothing."""

    depth: int
    inputs: Mapping[str, torch.Tensor] | None = None
    x: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    carried: int = 0


class Backbone(nn.Module):
    """Subclasses set the attributes below and implement embed, run_block, final_norm, pool."""

    modality: str  # "text" or "image"
    dim: int
    num_heads: int
    num_blocks: int
    num_prefix_tokens: int  # tokens before the prompt region ([CLS], register tokens)
    attentions: nn.ModuleList  # PrefixAttention per block
    logit_scale: float | None = None  # a dual encoder's own score scale (CLIP's learned one)
    # where the linears that weight edits wrap live: "{blocks_path}.{index}.{path}"
    blocks_path: str = "blocks"
    attention_linears: Mapping[str, str] = {}  # short name -> path in a block
    mlp_linears: Mapping[str, str] = {}

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs -> block-0 input (B, N, d) and keep mask (B, N) (None: all tokens real);
        ``ctx`` replaces the word embeddings of positions 1..n_ctx (text backbones only)."""
        raise NotImplementedError

    def prompt_input(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Prompt tokens entering block ``index`` (CLIP's image tower norms block-0 prompts)."""
        return tokens

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        prefix: Prefix | None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        """Block ``index`` on x (B, N, d) -> (B, N, d); ``edits``: the block's edited linears
        by short name (``linear_paths``), each called through ``masked.edited_linear``."""
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Normed hidden states (B, N, d) -> the backbone's own pooled feature (B, d)."""
        raise NotImplementedError

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        """Pooled feature -> the shared embedding space of a dual encoder (CLIP's projections)."""
        return feature

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> word embeddings, for context vectors initialised from words."""
        raise UsageError(f"{type(self).__name__} has no word embeddings (not a text backbone)")

    def text_partner(self) -> Backbone | None:
        """The text tower that encodes class texts for this image tower (CLIP), if any."""
        return None

    def linear_paths(self, index: int, mlp: bool = False) -> dict[str, str]:
        """Short name -> submodule path of block ``index``'s attention projections (and, with
        ``mlp``, its MLP linears): the layers that weight masks wrap."""
        if not self.attention_linears:
            raise UsageError(f"masked linears are not wired for {type(self).__name__} backbones")
        names = {**self.attention_linears, **(self.mlp_linears if mlp else {})}
        return {name: f"{self.blocks_path}.{index}.{path}" for name, path in names.items()}

    def attention_projection(self, part: str) -> tuple[str, int, int]:
        """The linear computing attention's ``part`` (query, key or value) in a block: its short
        name (``linear_paths``), and which of how many equal row groups of its output is the
        part's (timm's fused qkv: ("qkv", 1, 3) for the keys; a separate key linear: ("key",
        0, 1))."""
        parts = ("query", "key", "value")
        if part not in parts:
            raise ValueError(f"no attention projection {part!r}; choose one of {parts}")
        if part in self.attention_linears:
            return part, 0, 1
        if "qkv" in self.attention_linears:
            return "qkv", parts.index(part), 3
        raise UsageError(f"attention projections are not wired for {type(self).__name__} backbones")

    def train(self, mode: bool = True) -> Backbone:
        """The frozen backbone stays in eval mode: no dropout, deterministic features."""
        return super().train(False)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        prompts: Prompts | None = None,
        prefixes: Mapping[int, Prefix | PrefixFn] | None = None,
        *,
        edits: Mapping[int, BlockEdits] | None = None,
        trunk: Trunk | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states after the final norm (B, N', d) and their keep mask.

        prompts: context vectors and per-block prompt steps; N' counts the prompt tokens.
        prefixes: block index -> prefix keys/values for that block's attention, or a function
        that computes them from the hidden states entering the block (routing, as in Hash).
        edits: block index -> that block's edits of its linears (backbones/masked.py).
        trunk: hidden states shared with other forwards on the same inputs (``Trunk``).
        """
        prompts, prefixes, edits, start = prompts or NO_PROMPTS, prefixes or {}, edits or {}, 0
        if trunk is not None and not 0 <= trunk.depth < self.num_blocks:
            raise ValueError(f"trunk depth must be in [0, {self.num_blocks}), got {trunk.depth}")
        if trunk is not None and trunk.inputs is inputs:
            x, keep, carried, start = trunk.x, trunk.keep, trunk.carried, trunk.depth
        else:
            if prompts.ctx is not None and self.modality != "text":
                raise UsageError(f"{type(self).__name__} takes no word-level context")
            x, keep = self.embed(inputs, prompts.ctx)
            carried = 0 if prompts.ctx is None else prompts.ctx.shape[-2]
        for i in range(start, self.num_blocks):
            if trunk is not None and i == trunk.depth:
                trunk.inputs, trunk.x, trunk.keep, trunk.carried = inputs, x.detach(), keep, carried
            step = prompts.steps.get(i)
            if step is not None and (step.tokens.shape[-2] or carried):
                x, keep, carried = self.apply_step(i, x, keep, carried, step)
            prefix = prefixes.get(i)
            if callable(prefix):
                prefix = prefix(x, keep)
            x = self.run_block(i, x, keep, prefix, edits.get(i, NO_EDITS))
        if carried and not prompts.pooled:
            at = self.num_prefix_tokens
            if keep is None:
                keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            keep = keep.clone()
            keep[:, at : at + carried] = False
        return self.final_norm(x), keep

    def apply_step(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        carried: int,
        step: PromptStep,
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The prompt region of ``carried`` tokens after ``step``; returns its new length."""
        if not 0 <= step.kept <= carried:
            raise ValueError(f"block {index} keeps {step.kept} of {carried} prompt tokens")
        B, at, kept = x.shape[0], self.num_prefix_tokens, step.kept
        tokens = self.prompt_input(index, step.tokens.to(x.dtype))  # fp32 prompts, bf16 blocks
        if tokens.dim() == 2:
            tokens = tokens.unsqueeze(0).expand(B, -1, -1)
        x = torch.cat([x[:, : at + kept], tokens, x[:, at + carried :]], dim=1)
        if keep is not None:
            ones = keep.new_ones(B, tokens.shape[1])
            keep = torch.cat([keep[:, : at + kept], ones, keep[:, at + carried :]], dim=1)
        return x, keep, kept + tokens.shape[1]

    def compile_blocks(self, **options: Any) -> Backbone:
        """Compile the block computation in place: ``run_block`` becomes
        ``torch.compile(run_block, **options)`` (default ``dynamic=True``: sequence lengths and
        prompt counts vary between batches without recompiling); embedding, prompt steps and
        prefix functions stay eager. Every per-call input is an argument, so compiled and eager
        blocks give the same outputs (tests/test_compile.py).

        Dynamo compiles one graph per block index (and per grad mode, prefix or none, kind of
        edit), all of one code object, so the per-code-object recompile limit is raised to
        8 per block. A mixed-task batch of per-task edits (``TaskEdits``: grouping by task)
        and Gradient ID's superposition break the graph (data-dependent shapes); they run
        eagerly there. Returns the backbone."""
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, 8 * self.num_blocks)
        self.run_block = torch.compile(self.run_block, **{"dynamic": True, **options})
        return self

    @torch.no_grad()
    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled feature of the un-prompted input (B, d), without gradients."""
        x, keep = self(inputs)
        return self.pool(x, keep)


def input_prompts(tokens: torch.Tensor) -> Prompts:
    """Prompt tokens (B, L, d) inserted after the prefix tokens at the input (L2P)."""
    return Prompts(steps={0: PromptStep(tokens)})


def replace_context(words: torch.Tensor, ctx: torch.Tensor, at: int = 1) -> torch.Tensor:
    """Word embeddings (B, N, d) with positions at..at+n replaced by ctx (n, d) or (B, n, d)."""
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(words.shape[0], -1, -1)
    n = ctx.shape[1]
    return torch.cat([words[:, :at], ctx.to(words.dtype), words[:, at + n :]], dim=1)


def masked_mean(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over the sequence of (B, N, d), counting only real tokens."""
    if keep is None:
        return x.mean(dim=1)
    w = keep.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


__all__ = [
    "NO_PROMPTS",
    "Backbone",
    "Prefix",
    "PrefixAttention",
    "PrefixFn",
    "PromptStep",
    "Prompts",
    "Trunk",
    "freeze",
    "input_prompts",
    "masked_mean",
    "replace_context",
]

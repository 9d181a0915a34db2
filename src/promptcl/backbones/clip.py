"""CLIP (transformers' ``CLIPModel``) as two backbones: its image tower and its text tower.

The layers are transformers' own modules (layer norms, q/k/v/out projections, MLP); ours are
the loop over them and the calls of their pieces (``CLIPMLP``'s fc1, act, fc2 included, so that
edited linears get their edits). Text: token + position embeddings, causal self-attention (plus the
padding mask), final LayerNorm, the feature of the last real token (end of text), text
projection. Image: patch + class + position embeddings, pre-LayerNorm, blocks, post-LayerNorm,
the class token, visual projection. Tested equal to ``get_text_features`` and
``get_image_features``. The image tower is an ordinary backbone for continual learning (its
pooled feature is the class token before the projection); ``text_partner`` gives the text
tower that a dual encoder pairs with it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from promptcl.backbones.attention import ClipPrefixAttention, Prefix
from promptcl.backbones.base import Backbone, freeze, replace_context
from promptcl.backbones.masked import NO_EDITS, BlockEdits, beside_mlp, edited_linear
from promptcl.errors import UsageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipTower(Backbone):
    """What both towers share: pre-norm CLIP encoder layers and a projection."""

    blocks_path = "layers"
    attention_linears = {
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "proj": "self_attn.out_proj",
    }
    mlp_linears = {"fc1": "mlp.fc1", "fc2": "mlp.fc2"}

    def __init__(self, tower: nn.Module, projection: nn.Module, causal: bool) -> None:
        super().__init__()
        self.layers = tower.encoder.layers
        self.projection = projection
        self.attentions = nn.ModuleList(
            ClipPrefixAttention(layer.self_attn, causal) for layer in self.layers
        )
        self.dim = tower.config.hidden_size
        self.num_heads = tower.config.num_attention_heads
        self.num_blocks = len(self.layers)
        self.num_prefix_tokens = 1  # [CLS] / start of text

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        prefix: Prefix | None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        layer, mlp = self.layers[index], self.layers[index].mlp
        x = x + self.attentions[index](layer.layer_norm1(x), keep, prefix, edits)  # (B, N, d)
        h = mlp.activation_fn(edited_linear(mlp.fc1, layer.layer_norm2(x), edits.get("fc1")))
        return beside_mlp(x + edited_linear(mlp.fc2, h, edits.get("fc2")), x, edits)  # CLIPMLP

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        return self.projection(feature)


class ClipText(ClipTower):
    modality = "text"

    def __init__(self, model: nn.Module, tokenizer) -> None:
        text = model.text_model
        super().__init__(text, model.text_projection, causal=True)
        self.embeddings = text.embeddings
        self.final_layer_norm = text.final_layer_norm
        self.tokenizer = tokenizer
        self.max_length = text.config.max_position_embeddings
        freeze(self)

    def word_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings.token_embedding(ids)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = inputs["input_ids"]
        words = self.word_embeddings(ids)
        if ctx is not None:
            words = replace_context(words, ctx, self.num_prefix_tokens)
        positions = self.embeddings.position_embedding(
            self.embeddings.position_ids[:, : ids.shape[1]]
        )
        return words + positions, inputs["attention_mask"].bool()

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer_norm(x)

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """The last real token's hidden state (CLIP's end-of-text feature)."""
        B, N, _ = x.shape
        positions = torch.arange(N, device=x.device).expand(B, N)
        last = positions[:, -1] if keep is None else positions.masked_fill(~keep, -1).amax(dim=1)
        return x[torch.arange(B, device=x.device), last]


class ClipImage(ClipTower):
    modality = "image"

    def __init__(self, model: nn.Module, tokenizer, logit_scale: float | None = None) -> None:
        vision = model.vision_model
        super().__init__(vision, model.visual_projection, causal=False)
        self.embeddings = vision.embeddings
        self.pre_layrnorm = vision.pre_layrnorm
        self.post_layernorm = vision.post_layernorm
        size = vision.config.image_size
        self.data_config = {
            "input_size": (3, size, size),
            "interpolation": "bicubic",
            "crop_pct": 1.0,  # resize the short side to the crop size, as CLIP does
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        }
        learned = float(model.logit_scale.detach().exp())
        self.logit_scale = learned if logit_scale is None else logit_scale
        self._clip = (model, tokenizer)  # a plain tuple: the text tower is not a submodule
        freeze(self)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        return self.pre_layrnorm(self.embeddings(inputs["pixel_values"])), None

    def prompt_input(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        # MaPLe / IVLP append block-0 prompts before ln_pre; it is per token, so this is the same
        return self.pre_layrnorm(tokens) if index == 0 else tokens

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(x)

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return x[:, 0]

    def text_partner(self) -> ClipText:
        return ClipText(*self._clip)


def load_clip(source: str) -> ClipImage:
    """A CLIP checkpoint with its tokenizer from a local directory or the hub (never the
    model's own code, safetensors weights only: ``hf.check_model_folder``)."""
    from transformers import AutoConfig, AutoTokenizer, CLIPModel

    from promptcl.backbones.hf import LOAD_ERRORS, check_model_folder, first_line, pretrained

    check_model_folder(source, "CLIP")
    try:
        config = pretrained(AutoConfig, source)
    except Exception as err:  # a config's own checks raise any type (TypeError, hub's errors)
        raise clip_failure(source, f"config.json: {first_line(err)}") from None
    if config.model_type != "clip":
        raise clip_failure(source, f"config.json says model_type {config.model_type!r}")
    try:
        model = pretrained(CLIPModel, source, config=config, use_safetensors=True)
        tokenizer = pretrained(AutoTokenizer, source)
    except LOAD_ERRORS as err:
        raise clip_failure(source, first_line(err)) from None
    return ClipImage(model.eval(), tokenizer)


def clip_failure(source: str, reason: str) -> UsageError:
    return UsageError(
        f"could not load CLIP {source!r} ({reason}); pass a local directory holding a "
        "transformers CLIP checkpoint as backbone=clip:DIR"
    )


def tiny_clip_model(seed: int = 0, text_dim: int = 32, vision_dim: int = 32):
    """A random 2-layer CLIP (32 px images, 8 px patches) with MiniLM's tokenizer (no CLIP
    tokenizer files exist offline): the vocabulary size and end token follow that tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    from promptcl.backbones.hf import packaged_model_dir, pretrained

    tokenizer = pretrained(AutoTokenizer, str(packaged_model_dir("minilm-l6")))
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


def tiny_clip(seed: int = 0) -> ClipImage:
    return ClipImage(*tiny_clip_model(seed))

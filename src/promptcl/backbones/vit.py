"""timm Vision Transformers as promptcl backbones.

The blocks are timm's own modules; ``run_block`` calls their pieces in timm's order (attention
through PrefixAttention, then ``Mlp``'s fc1, act, drop1, norm, fc2, drop2), so that edited
linears get their edits (backbones/masked.py). Tested equal to ``forward_features``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from promptcl.backbones.attention import Prefix, TimmPrefixAttention
from promptcl.backbones.base import Backbone, freeze
from promptcl.backbones.masked import NO_EDITS, BlockEdits, beside_mlp, edited_linear
from promptcl.errors import UsageError


class TimmViT(Backbone):
    """A timm VisionTransformer run block by block. Pooled feature: the model's own
    ``forward_head(pre_logits=True)`` (class token or average, then fc_norm)."""

    modality = "image"
    blocks_path = "model.blocks"
    attention_linears = {"qkv": "attn.qkv", "proj": "attn.proj"}
    mlp_linears = {"fc1": "mlp.fc1", "fc2": "mlp.fc2"}

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from timm.data import resolve_data_config
        from timm.layers import Mlp
        from timm.models.vision_transformer import Block, VisionTransformer

        if not isinstance(model, VisionTransformer) or not all(
            type(b) is Block and type(b.mlp) is Mlp for b in model.blocks
        ):
            raise UsageError(
                f"{type(model).__name__} is not a plain timm VisionTransformer; pick a vit_* model"
            )
        freeze(model)
        self.model = model
        self.attentions = nn.ModuleList(TimmPrefixAttention(b.attn) for b in model.blocks)
        self.dim = model.embed_dim
        self.num_heads = model.blocks[0].attn.num_heads
        self.num_blocks = len(model.blocks)
        self.num_prefix_tokens = model.num_prefix_tokens
        self.data_config = resolve_data_config({}, model=model)  # mean, std, crop_pct
        self.data_config["input_size"] = (3, *model.patch_embed.img_size)  # the model's own
        freeze(self)

    def embed(
        self, inputs: Mapping[str, torch.Tensor], ctx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        m = self.model
        x = m.patch_embed(inputs["pixel_values"])
        x = m._pos_embed(x)  # class/register tokens + position embedding (no public hook)
        return m.norm_pre(m.patch_drop(x)), None

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        keep: torch.Tensor | None,
        prefix: Prefix | None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        b = self.model.blocks[index]
        x = x + b.drop_path1(b.ls1(self.attentions[index](b.norm1(x), keep, prefix, edits)))
        mlp = b.mlp
        h = mlp.drop1(mlp.act(edited_linear(mlp.fc1, b.norm2(x), edits.get("fc1"))))
        h = mlp.drop2(edited_linear(mlp.fc2, mlp.norm(h), edits.get("fc2")))
        return beside_mlp(x + b.drop_path2(b.ls2(h)), x, edits)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=True)


def load_timm_vit(name: str, weights: str | None = None) -> TimmViT:
    """``timm.create_model(name)`` with weights from a local file (``load_weights``), from
    timm's hub when ``weights`` is None, or random when ``weights`` is "random" (speed
    measurements only)."""
    import timm

    if weights not in (None, "random") and not Path(weights).is_file():
        raise UsageError(f"weights file {weights} not found; pass backbone_weights=FILE")
    try:
        model = timm.create_model(name, pretrained=weights is None, num_classes=0)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise UsageError(f"timm has no model {name!r}; see timm.list_models('vit_*')") from None
        raise
    except OSError as err:
        raise UsageError(
            f"could not fetch weights for {name!r} ({str(err).splitlines()[0]}); "
            "download them on a connected machine and pass backbone_weights=FILE"
        ) from None
    vit = TimmViT(model)
    if weights not in (None, "random"):
        load_weights(model, Path(weights), name)
    return vit


def load_weights(model: nn.Module, path: Path, name: str) -> None:
    """A local weights file into the timm ViT ``model``, never running code from it: .npz (the
    original JAX checkpoints, timm's reader), .safetensors, or else a PyTorch file read with
    ``torch.load(weights_only=True)`` (a training checkpoint's "state_dict" or "model" entry),
    passed through timm's own conversion. Every tensor of the model must be in the file."""
    import pickle
    import warnings

    from safetensors.torch import load_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        if path.suffix == ".npz":
            model.load_pretrained(str(path))
            return
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            with warnings.catch_warnings():  # the outcome is told in one line, below
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model", state))
        missing = model.load_state_dict(checkpoint_filter_fn(state, model), strict=False)[0]
    except Exception as err:  # whatever the file holds, it is refused in one line
        why = (
            "damaged, or it holds Python objects, which promptcl never unpickles"
            if isinstance(err, pickle.UnpicklingError)
            else str(err).strip().splitlines()[0].split(". ")[0]
        )
        raise UsageError(
            f"cannot load {path} into {name} ({why}); pass that model's .safetensors, "
            ".pth or .npz weights"
        ) from None
    if missing:
        raise UsageError(
            f"{path} lacks {len(missing)} tensors of {name} (such as {missing[0]}); pass that "
            "model's weights"
        )


def tiny_vit(seed: int = 0) -> TimmViT:
    """A random 2-block ViT (d=32, 32 px, patch 8), for tests and smoke runs."""
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            num_classes=0,
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=4,
        )
    return TimmViT(model)

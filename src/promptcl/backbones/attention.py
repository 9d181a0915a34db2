"""PrefixAttention: self-attention over a frozen base layer, with optional prefix keys/values.

Prefix tuning (Li & Liang 2021; DualPrompt eq. 3) concatenates learned (p_K, p_V), each
(L_p, d), to the keys and values after the projections: keys (B, H, L_p + N, d_head). The
prefix is split per head exactly as the projected keys are, so head h sees columns
h*d_head:(h+1)*d_head of p_K and p_V.

Encoders with relative positions add a term to the scores among the real tokens (MPNet's
position bias, DeBERTa's disentangled attention: ``PrefixAttention.score_bias``); prefix
positions have no position and get no such term.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.masked import NO_EDITS, BlockEdits, edited_linear


class PrefixGate(NamedTuple):
    """NoRGa's non-linear residual gate on the prefix scores: s -> s + alpha * act(tau * s)."""

    tau: torch.Tensor
    alpha: torch.Tensor
    activation: Callable[[torch.Tensor], torch.Tensor]


class Prefix(NamedTuple):
    """Prefix keys and values for one block, each (B, L_p, d) or (L_p, d) shared by the batch."""

    key: torch.Tensor
    value: torch.Tensor
    gate: PrefixGate | None = None


class PrefixAttention(nn.Module):
    """Base class: subclasses say how the frozen ``base_layer`` projects and outputs.

    ``causal``: token i attends to tokens <= i only (CLIP's text tower); prefix positions are
    attended to by every token. ``scale``: the score scale, None for 1/sqrt(d_head).
    ``edits``: the block's edits of its projections, by short name (backbones/masked.py).
    """

    causal: bool = False
    scale: float | None = None

    def __init__(self, base_layer: nn.Module, num_heads: int) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.num_heads = num_heads

    def project(
        self, x: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, d) -> q, k, v, each (B, H, N, d_head)."""
        raise NotImplementedError

    def output(self, context: torch.Tensor, edits: BlockEdits = NO_EDITS) -> torch.Tensor:
        """(B, N, H * d_head) -> (B, N, d)."""
        raise NotImplementedError

    def heads_of(
        self, x: torch.Tensor, edits: BlockEdits, projections: Mapping[str, nn.Linear]
    ) -> tuple[torch.Tensor, ...]:
        """(B, N, d) through each projection (by short name), split per head: (B, H, N,
        d_head) each."""
        B, N, _ = x.shape
        return tuple(
            edited_linear(p, x, edits.get(name)).view(B, N, self.num_heads, -1).transpose(1, 2)
            for name, p in projections.items()
        )

    def split_heads(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """(B, L, d) or (L, d) -> (B, H, L, d_head)."""
        if t.dim() == 2:
            t = t.unsqueeze(0).expand(batch, -1, -1)
        B, L, d = t.shape
        return t.reshape(B, L, self.num_heads, d // self.num_heads).transpose(1, 2)

    def mask(self, keep: torch.Tensor | None, n: int, prefix_length: int) -> torch.Tensor | None:
        """Boolean attention mask, True = may attend: (B, 1, 1, Lp + N) from the keep mask,
        (B or 1, 1, N, Lp + N) when causal; None when every position may attend."""
        if keep is not None and prefix_length:  # prefix positions are always attended to
            keep = torch.cat([keep.new_ones(keep.shape[0], prefix_length), keep], dim=1)
        mask = keep[:, None, None, :] if keep is not None else None
        if not self.causal:
            return mask
        device = keep.device if keep is not None else None
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        causal = torch.cat([causal.new_ones(n, prefix_length), causal], dim=1)[None, None]
        return causal if mask is None else causal & mask

    def score_bias(
        self, q: torch.Tensor, k: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> torch.Tensor | None:
        """A term added to the scores among the N real tokens, (B or 1, H, N, N), from the
        projected q, k (B, H, N, d_head): MPNet's relative position bias, DeBERTa's
        disentangled terms (backbones/relpos.py). Prefix positions have no position, so their
        scores get none. None (the default): no such term."""
        return None

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        prefix: Prefix | None = None,
        edits: BlockEdits = NO_EDITS,
    ) -> torch.Tensor:
        """x: (B, N, d); keep: (B, N) bool, True for real tokens; prefix: keys/values to prepend."""
        B, N, _ = x.shape
        q, k, v = self.project(x, edits)  # (B, H, N, dh)
        bias = self.score_bias(q, k, edits)  # (B or 1, H, N, N) or None
        if prefix is None:
            mask = with_bias(self.mask(keep, N, 0), bias, 0, q.dtype)
            context = attend(q, k, v, mask, self.scale)
            return self.output(context.transpose(1, 2).reshape(B, N, -1), edits)
        pk, pv = self.split_heads(prefix.key, B).to(k.dtype), self.split_heads(prefix.value, B)
        v = torch.cat([pv.to(v.dtype), v], dim=2)  # (B, H, Lp + N, dh)
        mask = self.mask(keep, N, pk.shape[2])  # (B, 1, 1 or N, Lp + N)
        if prefix.gate is None:
            k = torch.cat([pk, k], dim=2)
            mask = with_bias(mask, bias, pk.shape[2], q.dtype)
            context = attend(q, k, v, mask, self.scale)
        else:
            context = gated_attention(q, pk, k, v, mask, prefix.gate, self.scale, bias)
        return self.output(context.transpose(1, 2).reshape(B, N, -1), edits)


REDUCED = (torch.bfloat16, torch.float16)


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 when it is bf16 or fp16; fp32 and float64 tensors as they are (a precision
    rule never rounds a float64 computation)."""
    return t.float() if t.dtype in REDUCED else t


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Xeon Sapphire Rapids and later), whose bf16 tile
    products oneDNN uses."""
    return torch.cpu._is_amx_tile_supported()


def attention_in_fp32(q: torch.Tensor) -> bool:
    """Whether ``attend`` raises CPU attention on ``q`` to fp32: when it would run in fp16, or
    in bf16 (bf16 inputs, or fp32 ones under bf16 autocast) on a CPU without AMX.

    Measured per ISA (benchmarks/attention.py, forward + backward at 64-197 tokens): without
    AMX, PyTorch's CPU attention kernel is slower in bf16 than in fp32 (AVX512-BF16 EPYC: 2-7x;
    AVX2, no native bf16: emulated, slower still), so the reduced precisions gain from their
    matrix products only. On an AMX Xeon bf16 attention is faster than fp32 (issue 32: forward
    5.2 vs 8.3 ms at 197 tokens; bf16-true training 6 % and evaluation 25 % faster with it),
    so bf16 stays bf16 there. float64 is never cast (autocast leaves it alone too).
    """
    dtype = q.dtype
    if dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    return dtype == torch.float16 or (dtype == torch.bfloat16 and not cpu_has_amx())


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (frozen: no dropout), (B, H, N, dh) -> (B, H, N, dh).

    On the CPU, attention that ``attention_in_fp32`` raises runs in fp32 and returns in the
    input's dtype; everything else (other devices included) runs as it is.
    """
    if q.device.type != "cpu" or not attention_in_fp32(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if mask is not None and mask.is_floating_point():
        mask = mask.float()
    with torch.autocast("cpu", enabled=False):
        context = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=mask, scale=scale
        )
    return context.to(q.dtype)


def with_bias(
    mask: torch.Tensor | None, bias: torch.Tensor | None, prefix_length: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """The attention mask with a score bias over the real tokens: the float mask
    SDPA adds to the scores, zeros over the ``prefix_length`` prefix positions and -inf where
    ``mask`` forbids. No bias: ``mask`` itself (boolean or None), so backbones without one run
    exactly as before."""
    if bias is None:
        return mask
    bias = F.pad(bias.to(dtype), (prefix_length, 0))  # (B or 1, H, N, Lp + N)
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


def gated_attention(
    q: torch.Tensor,
    prefix_key: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    gate: PrefixGate,
    scale: float | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention whose prefix scores pass through NoRGa's gate (Le et al. 2024, eq. 9).

    q, k: (B, H, N, dh); prefix_key: (B, H, Lp, dh); v: (B, H, Lp + N, dh) -> (B, H, N, dh);
    bias: added to the real tokens' scores (``PrefixAttention.score_bias``).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    prefix_scores = (q @ prefix_key.transpose(-2, -1)) * scale  # (B, H, N, Lp)
    prefix_scores = prefix_scores + gate.alpha * gate.activation(gate.tau * prefix_scores)
    token_scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, N, N)
    if bias is not None:
        token_scores = token_scores + bias.to(token_scores.dtype)
    scores = torch.cat([prefix_scores, token_scores], dim=-1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


class TimmPrefixAttention(PrefixAttention):
    """Wraps ``timm.layers.Attention`` (fused qkv, optional q/k norm)."""

    def __init__(self, base_layer: nn.Module) -> None:
        if getattr(base_layer, "gate", None) is not None:
            raise ValueError("gated timm attention is not supported; use a plain ViT")
        super().__init__(base_layer, base_layer.num_heads)

    def project(
        self, x: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = self.base_layer
        B, N, _ = x.shape
        qkv = edited_linear(base.qkv, x, edits.get("qkv"))
        qkv = qkv.reshape(B, N, 3, base.num_heads, base.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, dh)
        return base.q_norm(q), base.k_norm(k), v

    def output(self, context: torch.Tensor, edits: BlockEdits = NO_EDITS) -> torch.Tensor:
        base = self.base_layer
        return base.proj_drop(edited_linear(base.proj, base.norm(context), edits.get("proj")))


class EncoderPrefixAttention(PrefixAttention):
    """Wraps the self-attention module of a Hugging Face encoder layer with separate query, key
    and value linears (backbones/hf.py finds them by model type).

    ``names``: short name (query, key, value) -> attribute of ``base_layer``. ``bias``: a module
    (q, k, edits) -> the score bias of ``score_bias`` (backbones/relpos.py), whose ``scale``
    attribute replaces 1/sqrt(d_head) (DeBERTa's 1/sqrt(3 d_head)). The output projection,
    residual and LayerNorm run in the encoder's block.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        num_heads: int,
        names: Mapping[str, str],
        bias: nn.Module | None = None,
    ) -> None:
        super().__init__(base_layer, num_heads)
        self.names = dict(names)
        self.bias = bias
        self.scale = getattr(bias, "scale", None)

    def project(
        self, x: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = self.base_layer
        projections = {name: getattr(base, attribute) for name, attribute in self.names.items()}
        return self.heads_of(x, edits, projections)

    def output(self, context: torch.Tensor, edits: BlockEdits = NO_EDITS) -> torch.Tensor:
        return context

    def score_bias(
        self, q: torch.Tensor, k: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> torch.Tensor | None:
        return None if self.bias is None else self.bias(q, k, edits)


class ClipPrefixAttention(PrefixAttention):
    """Wraps transformers' ``CLIPAttention`` (separate q/k/v projections, ``out_proj``)."""

    def __init__(self, base_layer: nn.Module, causal: bool) -> None:
        super().__init__(base_layer, base_layer.num_heads)
        self.causal = causal
        self.scale = base_layer.scale

    def project(
        self, x: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = self.base_layer
        projections = {"query": base.q_proj, "key": base.k_proj, "value": base.v_proj}
        return self.heads_of(x, edits, projections)

    def output(self, context: torch.Tensor, edits: BlockEdits = NO_EDITS) -> torch.Tensor:
        return edited_linear(self.base_layer.out_proj, context, edits.get("proj"))

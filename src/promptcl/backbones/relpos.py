"""Relative-position terms that MPNet and DeBERTa-v2 add to their attention scores.

Both are computed from the positions of the N real tokens (after any prompt tokens are
inserted: positions are those of the sequence a block sees) and added to the scores among them
(``PrefixAttention.score_bias``); prefix keys have no position, so their scores get nothing.
Each module maps (q, k, edits) with q, k: (B, H, N, d_head) to a bias (B or 1, H, N, N), and
reads the frozen weights of the transformers model it was built from.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from promptcl.backbones.masked import NO_EDITS, BlockEdits, edited_linear

# transformers' MPNet buckets distances into 32 whatever relative_attention_num_buckets says
MPNET_BUCKETS = 32
MPNET_MAX_DISTANCE = 128


def distance_buckets(n: int, device: torch.device, buckets: int, max_distance: int) -> torch.Tensor:
    """MPNet's (T5's) bidirectional buckets of the distance j - i, (N, N) long: half the buckets
    for each direction; within one half, exact distances below a quarter of ``buckets``, then
    logarithmically wider bins up to ``max_distance`` (the last bin takes all beyond)."""
    pos = torch.arange(n, device=device)
    offset = pos[:, None] - pos[None, :]  # i - j
    half = buckets // 2
    exact = half // 2
    direction = (offset < 0).long() * half  # keys after the query: the upper half
    distance = offset.abs()
    spread = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    wide = (exact + (spread * (half - exact)).long()).clamp_max(half - 1)
    return direction + torch.where(distance < exact, distance, wide)


class PositionBias(nn.Module):
    """MPNet's relative position bias (Song et al. 2020, sec. 2.3): one learned scalar per
    head and distance bucket, ``table`` (buckets, H), shared by all layers (transformers keeps
    it as ``encoder.relative_attention_bias``) and added to every layer's scores."""

    scale: float | None = None  # the usual 1/sqrt(d_head)

    def __init__(self, table: nn.Embedding) -> None:
        super().__init__()
        self.table = table

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> torch.Tensor:
        buckets = distance_buckets(q.shape[2], q.device, MPNET_BUCKETS, MPNET_MAX_DISTANCE)
        return self.table(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, N, N)


def log_positions(n: int, device: torch.device, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's bucketed relative positions i - j, (N, N) long: exact within +-buckets/2,
    then ceil-logarithmic up to +-(buckets - 1) at distance ``max_position``; ``buckets`` <= 0:
    the plain distances."""
    pos = torch.arange(n, device=device)
    offset = pos[:, None] - pos[None, :]  # i - j
    if buckets <= 0 or max_position <= 0:
        return offset
    mid = buckets // 2
    near = offset.abs() <= mid
    distance = torch.where(near, torch.full_like(offset, mid - 1), offset.abs())
    ratio = torch.log(distance / mid) / torch.log(torch.tensor((max_position - 1) / mid))
    far = (torch.ceil(ratio * (mid - 1)) + mid) * offset.sign()
    return torch.where(near, offset.to(far.dtype), far).long()


class DisentangledBias(nn.Module):
    """DeBERTa's disentangled attention terms (He et al. 2021, eq. 4), for one layer.

    With P the relative-position embeddings (2k, d) (``rel_embeddings``, through ``norm`` when
    the config's ``norm_rel_ebd`` asks for it), K_r = P W_k and Q_r = P W_q (the layer's own
    key and query projections, with their edits, when ``share_att_key``; otherwise its
    ``pos_key_proj`` and ``pos_query_proj``), and r(i, j) = clamp(bucketed(i - j) + k, 0,
    2k - 1): content-to-position c2p_ij = q_i . K_r[r(i, j)] and position-to-content
    p2c_ij = k_j . Q_r[r(i, j)] (the index transformers' implementation uses for both). Each
    term named in ``pos_att_type`` adds one to the scale factor s; every score (content, c2p,
    p2c, prefix) is divided by sqrt(s d_head).
    """

    def __init__(
        self,
        attention: nn.Module,
        rel_embeddings: nn.Embedding | None,
        norm: nn.Module | None,
        buckets: int,
        max_position: int,
    ) -> None:
        super().__init__()
        self.attention = attention  # transformers' DisentangledSelfAttention
        self.rel_embeddings = rel_embeddings  # None: no relative attention, only the scale
        self.norm = norm
        self.buckets = buckets
        self.max_position = max_position
        self.terms = [t for t in ("c2p", "p2c") if t in attention.pos_att_type]
        self.scale = (attention.attention_head_size * (1 + len(self.terms))) ** -0.5

    def relative_keys(self, table: torch.Tensor, term: str, edits: BlockEdits) -> torch.Tensor:
        """P (2k, d) -> K_r for c2p, Q_r for p2c: (H, 2k, d_head)."""
        attention = self.attention
        name, own, separate = {
            "c2p": ("key", attention.key_proj, "pos_key_proj"),
            "p2c": ("query", attention.query_proj, "pos_query_proj"),
        }[term]
        if attention.share_att_key:
            y = edited_linear(own, table, edits.get(name))
        else:
            y = getattr(attention, separate)(table)
        return y.view(table.shape[0], attention.num_attention_heads, -1).transpose(0, 1)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, edits: BlockEdits = NO_EDITS
    ) -> torch.Tensor | None:
        if self.rel_embeddings is None or not self.terms:
            return None
        B, H, N, _ = q.shape
        span = self.attention.pos_ebd_size
        table = self.rel_embeddings.weight
        table = (table if self.norm is None else self.norm(table))[: 2 * span]  # (2k, d)
        rel = log_positions(N, q.device, self.buckets, self.max_position)
        index = (rel + span).clamp(0, 2 * span - 1).expand(B, H, N, N)  # r(i, j)
        bias = torch.zeros(B, H, N, N, dtype=q.dtype, device=q.device)
        if "c2p" in self.terms:  # q_i . K_r[r(i, j)]
            scores = q @ self.relative_keys(table, "c2p", edits).transpose(-2, -1)  # (B, H, N, 2k)
            bias = bias + scores.gather(-1, index)
        if "p2c" in self.terms:  # k_j . Q_r[r(i, j)]: gathered per key j, then transposed
            scores = k @ self.relative_keys(table, "p2c", edits).transpose(-2, -1)
            bias = bias + scores.gather(-1, index.transpose(-2, -1)).transpose(-2, -1)
        return bias * self.scale

"""A dual encoder: a query backbone (utterance or image) and a label backbone (class text)
sharing an embedding space, with scores logit_scale * cos(f(x), g(class text)).

Any text backbone encodes both sides (one frozen module: MiniLM reads the utterance and the
readable intent name); an image backbone with a text partner (CLIP) is paired with it. Query
features leave the prompt tokens out of pooling (CLIP's image tower pools [CLS] anyway; a
mean-pooled text tower then pools the words only), so an empty prompt gives exactly the plain
encoder's feature; on the label side context vectors are words of the text and are pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import NO_PROMPTS, Backbone, Prompts, freeze
from promptcl.errors import UsageError

# sentence-transformers' MultipleNegativesRankingLoss scale for cosine similarities: the fixed
# logit scale of text-text dual encoders (CLIP brings its own learned one, 100 for OpenAI CLIP)
TEXT_LOGIT_SCALE = 20.0


class DualEncoder(nn.Module):
    """Two frozen backbones and a cosine scorer. ``query`` and ``label`` may be one module."""

    def __init__(self, query: Backbone, label: Backbone, logit_scale: float) -> None:
        super().__init__()
        if label.modality != "text":
            raise UsageError(f"{type(label).__name__} cannot encode class texts")
        self.query, self.label = query, label
        self.logit_scale = logit_scale
        self.modality = query.modality
        freeze(self)

    def encode_queries(
        self, inputs: Mapping[str, torch.Tensor], prompts: Prompts | None = None
    ) -> torch.Tensor:
        """L2-normalised query features (B, D)."""
        x, keep = self.query(inputs, replace(prompts or NO_PROMPTS, pooled=False))
        return F.normalize(self.query.project(self.query.pool(x, keep)), dim=-1)

    def label_features(
        self, class_tokens: Mapping[str, torch.Tensor], prompts: Prompts | None = None
    ) -> torch.Tensor:
        """Class-text features (C, D) in the shared space, before L2 normalisation."""
        x, keep = self.label(class_tokens, prompts)
        return self.label.project(self.label.pool(x, keep))

    def encode_labels(
        self, class_tokens: Mapping[str, torch.Tensor], prompts: Prompts | None = None
    ) -> torch.Tensor:
        """L2-normalised class-text features (C, D)."""
        return F.normalize(self.label_features(class_tokens, prompts), dim=-1)

    @property
    def embed_dim(self) -> int:
        """D, the width of the shared embedding space (the query projection's output)."""
        weight = next(self.query.parameters())
        with torch.no_grad():
            probe = torch.zeros(1, self.query.dim, device=weight.device, dtype=weight.dtype)
            return self.query.project(probe).shape[-1]

    def scores(self, queries: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, C) scores of queries (B, D) against class features shared by the batch (C, D)
        or given per query (B, C, D)."""
        if labels.dim() == 3:
            return self.logit_scale * torch.einsum("bd,bcd->bc", queries, labels)
        return self.logit_scale * queries @ labels.T  # (B, C)

    def train(self, mode: bool = True) -> DualEncoder:
        return super().train(False)


def dual_encoder(backbone: Backbone, logit_scale: float | None = None) -> DualEncoder:
    """Pair a backbone with what encodes class texts: itself (text) or its text partner."""
    if backbone.modality == "text":
        return DualEncoder(backbone, backbone, logit_scale or TEXT_LOGIT_SCALE)
    partner = backbone.text_partner()
    if partner is None:
        raise UsageError(
            f"{type(backbone).__name__} has no text encoder for class names; a dual encoder "
            "needs a text backbone or CLIP (clip:DIR, tiny-clip)"
        )
    return DualEncoder(backbone, partner, logit_scale or backbone.logit_scale)

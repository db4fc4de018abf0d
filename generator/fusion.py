"""Dynamic feature fusion, per case: how much to trust the image versus the retrieved reports.

DFFG-MLLMR weighs its modalities with global scalars and uses text features only in training. Here
the weight is computed for every case from the evidence itself, and used at inference:

    v  = image embedding (CT encoder)                   → projected to `hidden`
    t  = retrieved cases' report embeddings (k × text)  → projected, pooled by attention from v
    g  = sigmoid(MLP([v, t, v ⊙ t]))                    ∈ (0, 1): 1 = image only, 0 = reports only
    z  = g · tokens_v(v) + (1 − g) · tokens_t(t)         → K soft-prompt tokens in the LLM's space

A case with no retrieved reports (an empty index) gets g = 1. `fixed_gate` pins g for ablations.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class FusionConfig:
    image_dim: int = 512
    text_dim: int = 384
    llm_dim: int = 576
    soft_tokens: int = 4
    hidden: int = 256
    dropout: float = 0.1

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> FusionConfig:
        return cls(**json.loads(path.read_text()))


@dataclass
class FusionOutput:
    tokens: torch.Tensor  # (B, K, llm_dim) soft-prompt embeddings
    gate: torch.Tensor  # (B,) weight of the image evidence


class DynamicFusion(nn.Module):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden
        self.image_proj = nn.Sequential(nn.Linear(config.image_dim, h), nn.LayerNorm(h))
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, h), nn.LayerNorm(h))
        self.gate_mlp = nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(h, 1))
        self.image_tokens = nn.Linear(h, config.soft_tokens * config.llm_dim)
        self.text_tokens = nn.Linear(h, config.soft_tokens * config.llm_dim)
        self.out_norm = nn.LayerNorm(config.llm_dim)
        # Soft tokens should have the scale of the LLM's own token embeddings; set by `match_scale`.
        self.token_scale = nn.Parameter(torch.tensor(1.0))

    @torch.no_grad()
    def match_scale(self, embeddings: torch.Tensor) -> None:
        """Start the soft tokens at the per-dimension scale of the LLM's input embedding table."""
        self.token_scale.fill_(float(embeddings.float().std()))

    def forward(
        self,
        image: torch.Tensor,
        texts: torch.Tensor,
        mask: torch.Tensor,
        *,
        fixed_gate: float | None = None,
    ) -> FusionOutput:
        """image (B, image_dim); texts (B, k, text_dim); mask (B, k), True where a retrieved case exists."""
        v = self.image_proj(image)
        t_all = self.text_proj(texts)
        has_text = mask.any(dim=1)
        scores = torch.einsum("bh,bkh->bk", v, t_all) / math.sqrt(v.shape[-1])
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.where(has_text[:, None], torch.softmax(scores, dim=1), torch.zeros_like(scores))
        weights = torch.nan_to_num(weights)  # rows with no case at all
        t = torch.einsum("bk,bkh->bh", weights, t_all)
        gate = torch.sigmoid(self.gate_mlp(torch.cat([v, t, v * t], dim=-1))).squeeze(-1)
        if fixed_gate is not None:
            gate = torch.full_like(gate, fixed_gate)
        gate = torch.where(has_text, gate, torch.ones_like(gate))
        k, d = self.config.soft_tokens, self.config.llm_dim
        from_image = self.image_tokens(v).view(-1, k, d)
        from_text = self.text_tokens(t).view(-1, k, d)
        mixed = gate[:, None, None] * from_image + (1 - gate)[:, None, None] * from_text
        return FusionOutput(tokens=self.out_norm(mixed) * self.token_scale, gate=gate)

"""Gated feature selection, GFS ("GCFS" in the ablation table; paper §1.2.2, eqs. 7-8; DESIGN §2.3).

Every pixel and channel of the main branch gets a gate in (0, 1) from a spatial mask times a channel
attention, so irrelevant features are suppressed; the time embedding then scales and shifts the gated
features (FiLM, eq. 7) and a residual connection closes the block (eq. 8).

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import group_norm
from .embeddings import FeatureWiseAffine


class GatedFeatureSelection(nn.Module):
    """GFS (paper §1.2.2, eqs. 7-8).

    x -> GroupNorm -> 1x1 conv to 2C -> split; h1 = conv3x3(first half); s = depthwise conv(second half),
    c = MLP(GAP(second half)); g = sigmoid(s * c); h = FiLM_t(h1 * g) (eq. 7);
    out = conv(Dropout(SiLU(GroupNorm(h)))) + W_res(x) (eq. 8).
    """

    def __init__(self, in_channels: int, out_channels: int, *, time_embed_dim: int, norm_groups: int,
                 dropout: float):
        super().__init__()
        c = out_channels
        self.norm_in = group_norm(in_channels, norm_groups)
        self.expand = nn.Conv2d(in_channels, 2 * c, 1)
        self.main = nn.Conv2d(c, c, 3, padding=1)
        self.spatial = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.channel = nn.Sequential(nn.Linear(c, max(c // 4, 4)), nn.SiLU(), nn.Linear(max(c // 4, 4), c))
        self.film = FeatureWiseAffine(time_embed_dim, c)
        self.out = nn.Sequential(group_norm(c, norm_groups), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Conv2d(c, c, 3, padding=1))
        self.residual = nn.Conv2d(in_channels, c, 1) if in_channels != c else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C_in, H, W), t_emb (B, D) -> out (B, C, H, W), gate mean over channels (B, 1, H, W)."""
        # 1. expand and split
        h1, h2 = self.expand(self.norm_in(x)).chunk(2, dim=1)  # (B, C, H, W) each
        h1 = self.main(h1)
        # 2. gate = sigmoid(spatial mask * channel attention)
        s = self.spatial(h2)  # (B, C, H, W)
        c = self.channel(h2.mean(dim=(2, 3)))[:, :, None, None]  # (B, C, 1, 1)
        gate = torch.sigmoid(s * c)
        # 3. select, condition on the noise level (eq. 7), project and add the residual (eq. 8)
        h = self.film(h1 * gate, t_emb)
        out = self.out(h) + self.residual(x)
        return out, gate.mean(dim=1, keepdim=True)

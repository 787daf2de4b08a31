"""Time embeddings for DGD-Fusion (docs/design.md §2.4) and FeatureWiseAffine, the FiLM of the fusion head (§2.5).

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, sections 1.2.2 and 1.3.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps.

    Args:
        t: (B,) integer or float timesteps.
        dim: embedding width D (even).
    Returns:
        (B, D) float32: [cos(t * f_i), sin(t * f_i)] with geometric frequencies f_i.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, D/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """sinusoidal(t) -> Linear -> SiLU -> Linear: the t_emb every conditioned block reads.

    ``num_timesteps`` > 1 embeds a set of timesteps (the fusion head's feature timesteps) by
    concatenating their sinusoidal codes before the MLP, so the head knows which noise levels it sees.
    """

    def __init__(self, dim: int, num_timesteps: int = 1):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim * num_timesteps, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) or (B, T) timesteps -> (B, D)."""
        t = t.reshape(t.shape[0], -1)
        codes = [timestep_embedding(t[:, i], self.dim) for i in range(t.shape[1])]
        return self.mlp(torch.cat(codes, dim=-1))


class FeatureWiseAffine(nn.Module):
    """FiLM: h -> (1 + gamma(t_emb)) * h + beta(t_emb) (eq. 7's form, used after each R-Transformer block).

    The projection starts at zero so a fresh block is the identity, and the scale is written as
    1 + gamma so that zero means "no change".
    """

    def __init__(self, time_embed_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 2 * channels))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """h (B, C, H, W), t_emb (B, D) -> (B, C, H, W)."""
        gamma, beta = self.proj(t_emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return (1 + gamma) * h + beta

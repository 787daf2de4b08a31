"""Dynamic feature extractor, DFE (paper §1.2.1, eqs. 3-6; docs/design.md §2.2).

M expert kernels are mixed per sample by a gate that reads the features and the time embedding, so the
convolution adapts to the content and to the noise level. Eq. 4 (unfold + einsum) is computed as one
grouped convolution with the batch folded into channels (CondConv, Yang et al. 2019), which gives the same
function far faster; the unfold + einsum form is kept in the tests as the reference.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .common import group_norm


class ExpertGate(nn.Module):
    """Scores the M experts: conv -> global average pool -> linear, plus a linear of t_emb -> softmax.

    Adding the time term before the softmax makes the mixture depend on the noise level (docs/design.md §2.2).
    """

    def __init__(self, channels: int, num_experts: int, time_embed_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.score = nn.Linear(channels, num_experts)
        self.time_score = nn.Linear(time_embed_dim, num_experts)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), t_emb (B, D) -> alpha (B, M), rows summing to 1."""
        pooled = F.silu(self.conv(x)).mean(dim=(2, 3))  # (B, C)
        logits = self.score(pooled) + self.time_score(t_emb)  # (B, M)
        return logits.softmax(dim=-1)


class DynamicConv2d(nn.Module):
    """Per-sample kernel W^(b) = sum_m alpha_{b,m} W^(m) (eq. 3), applied with padding K // 2 (eqs. 4-6)."""

    def __init__(self, channels: int, num_experts: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_experts, channels))
        bound = 1 / math.sqrt(channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), alpha (B, M) -> (B, C, H, W)."""
        b = x.shape[0]
        # 1. mix the experts' kernels and biases per sample (eq. 3)
        weight = torch.einsum("bm,moikl->boikl", alpha, self.weight)  # (B, C, C, K, K)
        bias = alpha @ self.bias  # (B, C)
        # 2. one grouped convolution, the batch folded into channels (eq. 4 with eqs. 5-6's padding)
        x = rearrange(x, "b c h w -> 1 (b c) h w")
        weight = rearrange(weight, "b o i k l -> (b o) i k l")
        y = F.conv2d(x, weight, rearrange(bias, "b o -> (b o)"), padding=self.kernel_size // 2, groups=b)
        return rearrange(y, "1 (b c) h w -> b c h w", b=b)


class DynamicFeatureExtractor(nn.Module):
    """DFE (paper §1.2.1, eqs. 3-6): channel transform -> expert gate -> dynamic conv -> GroupNorm -> SiLU.

    Returns the features and the expert weights alpha (B, M), which the app draws as bar charts.
    """

    def __init__(self, in_channels: int, out_channels: int, *, num_experts: int, kernel_size: int,
                 time_embed_dim: int, norm_groups: int):
        super().__init__()
        self.channel_transform = nn.Conv2d(in_channels, out_channels, 1)
        self.gate = ExpertGate(out_channels, num_experts, time_embed_dim)
        self.conv = DynamicConv2d(out_channels, num_experts, kernel_size)
        self.norm = group_norm(out_channels, norm_groups)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C_in, H, W), t_emb (B, D) -> h (B, C, H, W), alpha (B, M)."""
        h = self.channel_transform(x)
        alpha = self.gate(h, t_emb)
        h = F.silu(self.norm(self.conv(h, alpha)))
        return h, alpha

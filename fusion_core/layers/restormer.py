"""R-Transformer block of the fusion head (paper §1.3, fig. 4; docs/design.md §2.5).

A Restormer block (Zamir et al., CVPR 2022): LayerNorm, multi-head *transposed* self-attention (MDTA:
attention between channels, so the cost is linear in the pixel count), LayerNorm, gated depthwise
feed-forward (GDFN), both with pre-norm residuals.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class TransposedAttention(nn.Module):
    """MDTA: per head, a (C/h x C/h) attention map between channels, from L2-normalised q and k.

    Cost O(C^2 N): linear in the number of pixels N, so it runs on whole 640x480 maps.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.qkv_dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        h, w = x.shape[-2:]
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (rearrange(z, "b (nh c) h w -> b nh c (h w)", nh=self.num_heads) for z in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (B, nh, C/nh, C/nh)
        out = rearrange(attn @ v, "b nh c (h w) -> b (nh c) h w", h=h, w=w)
        return self.proj(out)


class GatedDconvFeedForward(nn.Module):
    """GDFN: 1x1 to 2 x hidden, depthwise 3x3, GELU(x1) * x2, 1x1 back to C."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class RTransformerBlock(nn.Module):
    """R-Transformer block: x + MDTA(LN(x)), then + GDFN(LN(x))."""

    def __init__(self, channels: int, num_heads: int, ffn_expansion: float):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = TransposedAttention(channels, num_heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedDconvFeedForward(channels, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))

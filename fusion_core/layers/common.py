"""Small building blocks shared by DGD-Fusion's models: norms, resampling, padding, ablation fallbacks.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    groups = min(groups, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it (a branch that starts contributing nothing)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class Dropout(nn.Module):
    """nn.Dropout whose mask comes from a ``generator`` passed to ``forward`` (None: torch's global one).

    Randomness is an argument (docs/design.md): a training step hands its own seeded generator down, so a
    run with dropout repeats bit for bit whatever else draws from the global generator in between.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (...) -> x with a share ``p`` of its elements zeroed and the rest scaled by 1 / (1 - p)."""
        if not self.training or self.p == 0:
            return x
        device = generator.device if generator is not None else x.device
        keep = torch.rand(x.shape, generator=generator, device=device).to(x.device) >= self.p
        return x * keep / (1 - self.p)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom and right to multiples of ``multiple``.

    Reflection cannot exceed the side minus one, so small inputs are padded in several steps; a side of
    one pixel is replicated. Returns the padded tensor and the original (H, W) for ``crop_back``.
    """
    h, w = x.shape[-2:]
    target_h, target_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if min(h, w) == 1:
        return F.pad(x, (0, target_w - w, 0, target_h - h), mode="replicate"), (h, w)
    while x.shape[-2] < target_h or x.shape[-1] < target_w:
        pad_h = min(target_h - x.shape[-2], x.shape[-2] - 1)
        pad_w = min(target_w - x.shape[-1], x.shape[-1] - 1)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x, (h, w)


def crop_back(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``: keep the top-left (H, W)."""
    return x[..., : size[0], : size[1]]


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 convolution: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class PlainConvBlock(nn.Module):
    """Ablation stand-in for the DFE (DFE off): 1x1 channel transform, 3x3 conv, GroupNorm, SiLU."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, norm_groups: int):
        super().__init__()
        self.channel_transform = nn.Conv2d(in_channels, out_channels, 1)
        self.conv = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = group_norm(out_channels, norm_groups)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, None]:
        """x (B, C_in, H, W) -> (B, C, H, W); no expert weights to report."""
        return F.silu(self.norm(self.conv(self.channel_transform(x)))), None


class PlainResidualBlock(nn.Module):
    """Ablation stand-in for the GFS (GFS off): GroupNorm-SiLU-conv twice, time shift, residual."""

    def __init__(self, in_channels: int, out_channels: int, *, time_embed_dim: int, norm_groups: int,
                 dropout: float):
        super().__init__()
        self.block1 = nn.Sequential(group_norm(in_channels, norm_groups), nn.SiLU(),
                                    nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.time = nn.Linear(time_embed_dim, out_channels)
        self.block2 = nn.Sequential(group_norm(out_channels, norm_groups), nn.SiLU(), Dropout(dropout),
                                    nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, None]:
        """x (B, C_in, H, W), t_emb (B, D) -> (B, C_out, H, W); no gate to report. ``generator``: dropout's."""
        h = self.block1(x) + self.time(t_emb)[:, :, None, None]
        norm, act, drop, conv = self.block2
        return conv(drop(act(norm(h)), generator)) + self.skip(x), None


class ConcatFusion(nn.Module):
    """Ablation stand-in for the GLSA (GLSA off): concatenate, then a 1x1 convolution."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, channels, 1)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, None]:
        """features (B, C_i, H, W) -> (B, C, H, W); no attention map to report."""
        return self.reduce(torch.cat(features, dim=1)), None

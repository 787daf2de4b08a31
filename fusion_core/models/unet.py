"""The denoising UNet eps_theta(x_t, t) of DGD-Fusion (paper fig. 2b; docs/design.md §2.4).

Encoder: 4 stages of DFE then GFS, each followed by a stride-2 convolution; bottleneck: one GFS; decoder:
4 stages of upsample, skip concatenation, DFE then GFS. The net knows nothing of betas: it maps a noisy
pair x_t and its timesteps to the predicted noise, and exposes its decoder features for the fusion head.

Space-to-depth: the UNet runs at 1/s resolution (pixel unshuffle in, pixel shuffle out, as latent
diffusion runs at reduced resolution). A measurement on a 2-core CPU (docs/design.md §2.4) put a full-resolution
UNet at about 29 s per 640x480 pair against about 0.6 s with s = 4; the fusion head's full-resolution
source branches carry the fine detail, so s = 4 is the CPU default and s = 2 the GPU one.

Input skip (our addition): the folded input has 4 s^2 channels (64 for s = 4), more than the first stage's
width, so a UNet that sees x_t only through its stem cannot pass the noise through; the stage-1 loss of
such a UNet stalled at 0.89 on MSRS. The output convolution therefore reads the folded x_t beside the last
decoder features; with it the same run (6000 steps of 8 crops of 128x128) ended at 0.15 (mean of the last
1000 steps).

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig
from ..layers.common import Downsample, PlainConvBlock, PlainResidualBlock, Upsample, group_norm
from ..layers.dynamic_conv import DynamicFeatureExtractor
from ..layers.embeddings import TimeEmbedding
from ..layers.gated import GatedFeatureSelection, gate_activity


@dataclass
class UNetIntermediates:
    """What the UNet records when asked, by layer: "down1" ... "down4", "mid", "up1" ... "up4".

    Attributes:
        experts: DFE layer -> expert weights alpha (B, M), softmax over the experts.
        gates: GFS layer -> gate g, mean over channels (B, 1, H_i, W_i), in (0, 1); the full (B, C, H_i, W_i)
            gate is not kept.
        gate_activity: GFS layer -> the gate's activity statistics (B, 4), see ``gate_activity``.
    """

    experts: dict[str, torch.Tensor] = field(default_factory=dict)
    gates: dict[str, torch.Tensor] = field(default_factory=dict)
    gate_activity: dict[str, torch.Tensor] = field(default_factory=dict)

    def record_gate(self, layer: str, gate: torch.Tensor) -> None:
        """Keep the channel mean and the activity of a gate (B, C, H, W)."""
        self.gates[layer] = gate.mean(dim=1, keepdim=True)  # (B, 1, H, W)
        self.gate_activity[layer] = gate_activity(gate)  # (B, 4)


@dataclass
class UNetOutput:
    """eps (B, 4, H, W); decoder features from deepest to last, (B, C_i, H_i, W_i); intermediates when asked."""

    eps: torch.Tensor
    features: list[torch.Tensor]
    intermediates: UNetIntermediates | None = None


def _selection_block(in_channels: int, out_channels: int, config: UNetConfig) -> nn.Module:
    """GFS, or its ablation stand-in (a plain residual block) when ``config.use_gfs`` is off."""
    common = {"time_embed_dim": config.time_embed_dim, "norm_groups": config.norm_groups, "dropout": config.dropout}
    if not config.use_gfs:
        return PlainResidualBlock(in_channels, out_channels, **common)
    return GatedFeatureSelection(in_channels, out_channels, mask_norm=config.gfs_mask_norm,
                                 standardise_mask=config.gfs_standardise_mask, **common)


class DynamicGatedStage(nn.Module):
    """One UNet stage: DFE (or a plain conv block) then GFS (or a plain residual block)."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig):
        super().__init__()
        common = {"time_embed_dim": config.time_embed_dim, "norm_groups": config.norm_groups}
        if config.use_dfe:
            self.extract = DynamicFeatureExtractor(in_channels, out_channels, num_experts=config.num_experts,
                                                   kernel_size=config.kernel_size, **common)
        else:
            self.extract = PlainConvBlock(in_channels, out_channels, kernel_size=config.kernel_size,
                                          norm_groups=config.norm_groups)
        self.select = _selection_block(out_channels, out_channels, config)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, name: str, record: UNetIntermediates | None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H, W); records alpha and the gate under ``name`` when given a record.
        ``generator`` draws the dropout masks."""
        h, alpha = self.extract(x, t_emb)
        h, gate = self.select(h, t_emb, generator)
        if record is not None:
            if alpha is not None:
                record.experts[name] = alpha
            if gate is not None:
                record.record_gate(name, gate)
        return h


class DenoisingUNet(nn.Module):
    """eps_theta(x_t, t): (B, 4, H, W), (B,) -> (B, 4, H, W); H and W multiples of ``config.stride``."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        s2, widths = config.space_to_depth ** 2, config.channels
        self.time_embed = TimeEmbedding(config.time_embed_dim)
        self.stem = nn.Conv2d(config.in_channels * s2, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = widths[0]
        for width in widths:
            self.down.append(DynamicGatedStage(previous, width, config))
            self.downsample.append(Downsample(width, width))
            previous = width
        self.mid = _selection_block(previous, previous, config)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths):
            self.upsample.append(Upsample(previous))
            self.up.append(DynamicGatedStage(previous + width, width, config))
            previous = width
        self.out_norm = nn.Sequential(group_norm(previous, config.norm_groups), nn.SiLU())
        self.out = nn.Conv2d(previous + config.in_channels * s2, config.in_channels * s2, 3, padding=1)

    def gate_parameters(self) -> list[nn.Parameter]:
        """Every GFS layer's gate parameters (empty without GFS): what ``TrainConfig.gate_lr`` trains."""
        return [p for m in self.modules() if isinstance(m, GatedFeatureSelection) for p in m.gate_parameters()]

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Predicted noise eps (B, 4, H, W); ``generator`` draws the dropout masks (None: torch's global one)."""
        return self.forward_features(x_t, t, generator=generator).eps

    def forward_features(self, x_t: torch.Tensor, t: torch.Tensor, return_intermediates: bool = False,
                         generator: torch.Generator | None = None) -> UNetOutput:
        """Run the UNet and keep every decoder stage's features (and, if asked, alpha and gates).

        ``generator`` draws the dropout masks in training mode (None: torch's global generator)."""
        self._check_size(x_t)
        record = UNetIntermediates() if return_intermediates else None
        t_emb = self.time_embed(t)  # (B, D)
        # 1. space to depth: (B, 4, H, W) -> (B, 4 s^2, H/s, W/s)
        x = F.pixel_unshuffle(x_t, self.config.space_to_depth)
        h = self.stem(x)
        # 2. encoder: DFE + GFS, keep the skip, downsample
        skips = []
        for i, (stage, down) in enumerate(zip(self.down, self.downsample, strict=True), start=1):
            h = stage(h, t_emb, f"down{i}", record, generator)
            skips.append(h)
            h = down(h)
        # 3. bottleneck: one GFS
        h, gate = self.mid(h, t_emb, generator)
        if record is not None and gate is not None:
            record.record_gate("mid", gate)
        # 4. decoder: upsample, concatenate the skip, DFE + GFS
        features = []
        for i, (upsample, stage) in enumerate(zip(self.upsample, self.up, strict=True), start=1):
            h = torch.cat([upsample(h), skips.pop()], dim=1)
            h = stage(h, t_emb, f"up{i}", record, generator)
            features.append(h)
        # 5. output conv over the features and the folded input, then depth to space: (B, 4, H, W)
        eps = F.pixel_shuffle(self.out(torch.cat([self.out_norm(h), x], dim=1)), self.config.space_to_depth)
        return UNetOutput(eps=eps, features=features, intermediates=record)

    def _check_size(self, x: torch.Tensor) -> None:
        stride = self.config.stride
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(f"UNet input {tuple(x.shape[-2:])} must have sides divisible by {stride}; "
                             "pad it first (layers.common.pad_to_multiple)")

"""Gated feature selection, GFS ("GCFS" in the ablation table; paper §1.2.2, eqs. 7-8; docs/design.md §2.3).

Every pixel and channel of the main branch gets a gate g = sigmoid(s * c) in (0, 1), s a depthwise spatial
mask and c a channel attention, so irrelevant features are suppressed; the time embedding then scales and
shifts the gated features (FiLM, eq. 7) and a residual connection closes the block (eq. 8). Shapes: x
(B, C_in, H, W) and t_emb (B, D) -> out (B, C, H, W) and g (B, C, H, W); ``gate_activity`` sums g up as (B, 4).

Options, both off in the presets: ``mask_norm`` (``UNetConfig.gfs_mask_norm``) reads the mask's half of the
features through a GroupNorm; ``standardise_mask`` (``UNetConfig.gfs_standardise_mask``) brings s to zero
spatial mean and unit spatial standard deviation per sample and channel, so the gate's contrast is c alone.
Initialisation (ours; the paper is silent): c is an SE-style sigmoid whose last bias starts at
``CHANNEL_BIAS`` and the mask starts He-normal, so g does not start at a flat 0.5. What each choice did in
training is in docs/training.md ("The gates").

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Dropout, group_norm
from .embeddings import FeatureWiseAffine

CHANNEL_BIAS = 3.0  # sigmoid(3) = 0.95: the channel attention starts almost open
MASK_EPS = 1e-5  # keeps the standardised mask finite where a channel's mask is flat (a 1x1 map)
GATE_LOW, GATE_HIGH = 0.2, 0.8  # a gate value outside (0.2, 0.8) is counted as a decision
# The interior spread leaves out this many pixels at each edge: there the convolutions' zero padding, not the
# image, shapes a trained gate (docs/training.md measures it).
GATE_BORDER = 2


def gate_activity(gate: torch.Tensor) -> torch.Tensor:
    """How much a gate selects: (B, C, H, W) in (0, 1) -> (B, 4).

    Columns: the mean over channels of each channel's spatial standard deviation; the fraction of values
    below ``GATE_LOW``; the fraction above ``GATE_HIGH``; the first column again without the outer
    ``GATE_BORDER`` pixels (the whole map when it is too small to have an interior). A flat gate scores 0s.
    """
    spread = _spread(gate)  # (B,)
    low = (gate < GATE_LOW).float().flatten(1).mean(dim=1)  # (B,)
    high = (gate > GATE_HIGH).float().flatten(1).mean(dim=1)  # (B,)
    return torch.stack([spread, low, high, _spread(interior(gate))], dim=1)


def interior(maps):
    """A tensor or array of maps (..., H, W) without its outer ``GATE_BORDER`` pixels; whole when too small."""
    b = GATE_BORDER
    return maps[..., b:-b, b:-b] if min(maps.shape[-2:]) > 2 * b else maps


def _spread(gate: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B,): the mean over channels of each channel's spatial standard deviation."""
    return gate.float().flatten(2).std(dim=2, unbiased=False).mean(dim=1)


def _standardise(s: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the same with each map at zero spatial mean and unit spatial standard deviation."""
    mean = s.mean(dim=(2, 3), keepdim=True)
    var = s.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (s - mean) * torch.rsqrt(var + MASK_EPS)


class GatedFeatureSelection(nn.Module):
    """GFS (paper §1.2.2, eqs. 7-8).

    x -> GroupNorm -> 1x1 conv to 2C -> split; h1 = conv3x3(first half); s = depthwise conv(second half,
    through a GroupNorm when ``mask_norm``), standardised over space when ``standardise_mask``,
    c = sigmoid(MLP(GAP(second half))); g = sigmoid(s * c); h = FiLM_t(h1 * g) (eq. 7);
    out = conv(Dropout(SiLU(GroupNorm(h)))) + W_res(x) (eq. 8).
    """

    def __init__(self, in_channels: int, out_channels: int, *, time_embed_dim: int, norm_groups: int,
                 dropout: float, mask_norm: bool = False, standardise_mask: bool = False):
        super().__init__()
        self.standardise_mask = standardise_mask
        c, hidden = out_channels, max(out_channels // 4, 4)
        self.norm_in = group_norm(in_channels, norm_groups)
        self.expand = nn.Conv2d(in_channels, 2 * c, 1)
        self.main = nn.Conv2d(c, c, 3, padding=1)
        self.norm_mask = group_norm(c, norm_groups) if mask_norm else nn.Identity()
        self.spatial = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.channel = nn.Sequential(nn.Linear(c, hidden), nn.SiLU(), nn.Linear(hidden, c), nn.Sigmoid())
        self.film = FeatureWiseAffine(time_embed_dim, c)
        self.out = nn.Sequential(group_norm(c, norm_groups), nn.SiLU(), Dropout(dropout),
                                 nn.Conv2d(c, c, 3, padding=1))
        self.residual = nn.Conv2d(in_channels, c, 1) if in_channels != c else nn.Identity()
        nn.init.kaiming_normal_(self.spatial.weight, nonlinearity="relu")
        nn.init.zeros_(self.spatial.bias)
        nn.init.constant_(self.channel[2].bias, CHANNEL_BIAS)

    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters that shape g alone (spatial mask and channel attention), for stage-2 tuning."""
        return [*self.norm_mask.parameters(), *self.spatial.parameters(), *self.channel.parameters()]

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C_in, H, W), t_emb (B, D) -> out (B, C, H, W), gate g (B, C, H, W) in (0, 1).

        ``generator`` draws the dropout mask (None: torch's global generator)."""
        # 1. expand and split
        h1, h2 = self.expand(self.norm_in(x)).chunk(2, dim=1)  # (B, C, H, W) each
        h1 = self.main(h1)
        # 2. gate = sigmoid(spatial mask * channel attention)
        s = self.spatial(self.norm_mask(h2))  # (B, C, H, W)
        if self.standardise_mask:
            s = _standardise(s)  # zero spatial mean, unit spatial std per sample and channel
        c = self.channel(h2.mean(dim=(2, 3)))[:, :, None, None]  # (B, C, 1, 1) in (0, 1)
        gate = torch.sigmoid(s * c)
        # 3. select, condition on the noise level (eq. 7), project and add the residual (eq. 8)
        h = self.film(h1 * gate, t_emb)
        norm, act, drop, conv = self.out
        out = conv(drop(act(norm(h)), generator)) + self.residual(x)
        return out, gate

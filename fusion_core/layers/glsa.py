"""Global-local spatial attention, GLSA (paper §1.3, eqs. 9-16; docs/design.md §2.5).

Fuses features from two branches or two layers: concatenate and reduce to C channels (F), then
F_global = Upsample(Conv1x1(GAP(F)))                      (eqs. 9)
F_local  = GELU(GroupConv3x3(F))                           (eqs. 10-11)
M_c      = sigmoid(Conv1x1(concat(F, F_global, F_local)))  (eq. 12)
F_ch     = M_c * F                                         (eq. 13)
F_out    = Norm(F_ch + Attn(F_ch))                         (eqs. 14-16)
Attention over every pixel of a 640x480 map is quadratic in the pixel count and does not fit in memory;
Attn here is transposed (channel) multi-head attention, whose cost is linear in the pixel count.

Initialisation (ours): the mask convolution starts He-normal instead of PyTorch's default, whose logits
are so small on these features that M_c sat at a flat 0.5 (spatial standard deviation 0.0003-0.011 of the
channel mean in the first trained checkpoints). The spread of M_c is still bounded by that of F, which is
small on untrained features: on an MSRS pair at step 0 the channel-mean spatial standard deviation is
0.0013-0.0024 (0.0003-0.0014 with the default initialisation), and after training 0.009 and 0.024
(docs/training.md).

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .restormer import LayerNorm2d, TransposedAttention


class GlobalLocalAttention(nn.Module):
    """GLSA (eqs. 9-16). Returns the fused features and the attention map M_c averaged over channels."""

    def __init__(self, in_channels: int, channels: int, num_heads: int, local_groups: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, channels, 1)
        self.global_proj = nn.Conv2d(channels, channels, 1)
        self.local_conv = nn.Conv2d(channels, channels, 3, padding=1, groups=local_groups)
        self.mask = nn.Conv2d(3 * channels, channels, 1)
        self.attn = TransposedAttention(channels, num_heads)
        self.norm = LayerNorm2d(channels)
        nn.init.kaiming_normal_(self.mask.weight, nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features: tensors (B, C_i, H, W) with sum C_i = in_channels -> (B, C, H, W), M_c mean (B, 1, H, W)."""
        f = self.reduce(torch.cat(features, dim=1))  # (B, C, H, W)
        # 1. global context (eq. 9): pooled, projected and broadcast back over the map
        f_global = self.global_proj(f.mean(dim=(2, 3), keepdim=True)).expand_as(f)
        # 2. local context (eqs. 10-11)
        f_local = F.gelu(self.local_conv(f))
        # 3. channel calibration (eqs. 12-13)
        m_c = torch.sigmoid(self.mask(torch.cat([f, f_global, f_local], dim=1)))
        f_ch = m_c * f
        # 4. attention with a residual and a norm (eqs. 14-16)
        return self.norm(f_ch + self.attn(f_ch)), m_c.mean(dim=1, keepdim=True)

"""Stage-2 loss of DGD-Fusion (docs/design.md §2.7): unsupervised, as in SeAFusion and Dif-Fusion.

L = w_int * L1(Y_F, T) + w_grad * L1(|Sobel Y_F|, k * max(|Sobel Y_A|, |Sobel Y_B|))
    + w_ssim * (1 - (SSIM(Y_F, Y_A) + SSIM(Y_F, Y_B)) / 2),
with the intensity target T = (1 - m) * max(Y_A, Y_B) + m * (Y_A + Y_B) / 2 (m = ``LossConfig.intensity_mean``;
0, the paper's max target, by default), the gradient gain k = ``LossConfig.gradient_gain`` (1, the paper's, by
default), |Sobel| = |G_x| + |G_y| and SSIM over 7x7 uniform windows (the metric's window), images in [0, 1].

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, §2.1.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|G_x| + |G_y| of (B, 1, H, W) with replicate padding -> (B, 1, H, W)."""
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(x)  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    return g.abs().sum(dim=1, keepdim=True)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) images over uniform ``window`` x ``window`` windows (valid region)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = F.avg_pool2d(x, window, 1), F.avg_pool2d(y, window, 1)
    var_x = F.avg_pool2d(x * x, window, 1) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, window, 1) - mu_y ** 2
    cov = F.avg_pool2d(x * y, window, 1) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.mean()


@dataclass
class FusionLossOutput:
    """total (scalar, differentiable) and the three terms, detached scalars for logging (still on the device:
    reading them back is a host sync, left to the logger)."""

    total: torch.Tensor
    intensity: torch.Tensor
    gradient: torch.Tensor
    ssim: torch.Tensor


class FusionLoss(nn.Module):
    """The stage-2 loss; weights and intensity target from ``LossConfig``."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config

    def forward(self, y_fused: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor) -> FusionLossOutput:
        """y_fused, y_a, y_b (B, 1, H, W) in [0, 1] -> FusionLossOutput."""
        m = self.config.intensity_mean
        target = (1 - m) * torch.maximum(y_a, y_b) + m * (y_a + y_b) / 2  # T, (B, 1, H, W)
        intensity = F.l1_loss(y_fused, target)
        target_grad = self.config.gradient_gain * torch.maximum(sobel_magnitude(y_a), sobel_magnitude(y_b))
        gradient = F.l1_loss(sobel_magnitude(y_fused), target_grad)
        structure = 1 - (ssim(y_fused, y_a) + ssim(y_fused, y_b)) / 2
        c = self.config
        total = c.intensity * intensity + c.gradient * gradient + c.ssim * structure
        return FusionLossOutput(total=total, intensity=intensity.detach(), gradient=gradient.detach(),
                                ssim=structure.detach())

"""Stage-2 loss terms by hand (Sobel, SSIM, FusionLoss), and a few optimiser steps that must lower both losses."""

import pytest
import torch

from fusion_core.color import LUMA_WEIGHTS
from fusion_core.config import LossConfig
from fusion_core.diffusion import GaussianDiffusion
from fusion_core.losses import FusionLoss, sobel_magnitude, ssim
from fusion_core.models.dgd_fusion import DGDFusionModel

STEPS = 20
LR = 3e-3


def step_edge(height=8, width=8, column=4):
    """0 left of ``column``, 1 from it on: (1, 1, H, W)."""
    x = torch.zeros(1, 1, height, width)
    x[..., column:] = 1.0
    return x


def test_sobel_of_a_constant_image_is_zero():
    magnitude = sobel_magnitude(torch.full((2, 1, 9, 7), 0.7))
    assert magnitude.shape == (2, 1, 9, 7)
    torch.testing.assert_close(magnitude, torch.zeros(2, 1, 9, 7), rtol=0, atol=1e-6)


def test_sobel_of_a_vertical_step_edge_by_hand():
    # G_x = [-1 0 1; -2 0 2; -1 0 1]: 1 + 2 + 1 = 4 on both columns beside the edge, G_y = 0 everywhere
    expected = torch.zeros(1, 1, 8, 8)
    expected[..., 3:5] = 4.0
    assert torch.equal(sobel_magnitude(step_edge()), expected)


def test_sobel_adds_the_absolute_directional_gradients():
    edge = step_edge()
    corner = torch.maximum(edge, edge.transpose(-1, -2))  # ones except a 4x4 block of zeros at the top left
    magnitude = sobel_magnitude(corner)
    # at the block's inner corner (3, 3) the 3x3 window is [0 0 1; 0 0 1; 1 1 1]:
    # G_x = 1 + 2 + 0 = 3 and G_y = 3, so |G_x| + |G_y| = 6 (a Euclidean norm would give 4.24)
    assert magnitude[0, 0, 3, 3] == 6.0
    assert magnitude[0, 0, 0, 3] == 4.0 and magnitude[0, 0, 3, 0] == 4.0
    assert magnitude[0, 0, 7, 7] == 0.0


def test_ssim_of_an_image_with_itself_is_one():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim(x, x), torch.tensor(1.0))
    torch.testing.assert_close(ssim(torch.full_like(x, 0.3), torch.full_like(x, 0.3)), torch.tensor(1.0))


def test_ssim_drops_for_different_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 16, 16, generator=g)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim(x, noisy) < 0.9
    assert ssim(x, 1 - x) < 0
    assert ssim(x, noisy) == ssim(noisy, x)


def test_fusion_loss_is_zero_only_when_the_fused_image_is_both_sources():
    g = torch.Generator().manual_seed(2)
    y = torch.rand(1, 1, 16, 16, generator=g)
    loss = FusionLoss(LossConfig())
    same = loss(y, y, y)
    assert same.total.abs() < 1e-6 and same.intensity == 0 and same.gradient == 0
    other = torch.rand(1, 1, 16, 16, generator=g)
    # the brighter source matches the intensity target, but it cannot match both sources' structure
    assert loss(torch.maximum(y, other), y, other).total > 0.1


def test_fusion_loss_terms_by_hand():
    y_a, y_b = torch.full((1, 1, 8, 8), 0.2), step_edge()
    out = FusionLoss(LossConfig(intensity=1.0, gradient=10.0, ssim=1.0))(torch.zeros(1, 1, 8, 8), y_a, y_b)
    assert out.intensity.item() == pytest.approx((0.2 * 32 + 1.0 * 32) / 64)
    assert out.gradient.item() == pytest.approx(4.0 * 16 / 64)
    assert out.total.item() == pytest.approx((out.intensity + 10 * out.gradient + out.ssim).item(), rel=1e-6)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_intensity_target_mixes_the_brighter_source_and_the_mean(share):
    y_a, y_b = torch.full((1, 1, 8, 8), 0.2), step_edge()  # max: 0.2 left, 1 right; mean: 0.1 left, 0.6 right
    out = FusionLoss(LossConfig(intensity_mean=share))(torch.zeros(1, 1, 8, 8), y_a, y_b)
    left, right = (1 - share) * 0.2 + share * 0.1, (1 - share) * 1.0 + share * 0.6
    assert out.intensity.item() == pytest.approx((left + right) / 2)


@pytest.mark.parametrize("gain", [1.0, 1.5])
def test_gradient_target_is_the_sharper_source_times_the_gain(gain):
    y_a, y_b = torch.full((1, 1, 8, 8), 0.2), step_edge()  # Sobel magnitude 4 on the two middle columns of B
    out = FusionLoss(LossConfig(gradient_gain=gain))(torch.zeros(1, 1, 8, 8), y_a, y_b)
    assert out.gradient.item() == pytest.approx(gain * 4.0 * 16 / 64)


def test_fusion_loss_weights_scale_their_terms():
    g = torch.Generator().manual_seed(3)
    y_f, y_a, y_b = (torch.rand(1, 1, 16, 16, generator=g) for _ in range(3))
    base = FusionLoss(LossConfig(intensity=1.0, gradient=0.0, ssim=0.0))(y_f, y_a, y_b)
    double = FusionLoss(LossConfig(intensity=2.0, gradient=0.0, ssim=0.0))(y_f, y_a, y_b)
    torch.testing.assert_close(double.total, 2 * base.total)
    torch.testing.assert_close(base.total, base.intensity)


def test_fusion_loss_is_differentiable():
    g = torch.Generator().manual_seed(4)
    y_f = torch.rand(1, 1, 16, 16, generator=g).requires_grad_()
    y_a, y_b = torch.rand(1, 1, 16, 16, generator=g), torch.rand(1, 1, 16, 16, generator=g)
    FusionLoss(LossConfig())(y_f, y_a, y_b).total.backward()
    assert torch.isfinite(y_f.grad).all() and y_f.grad.abs().sum() > 0


def fixed_batch(seed=0):
    """A small fixed stacked pair x0 (2, 4, 32, 32) in [-1, 1] with some structure."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    a = 0.5 + 0.4 * torch.sin(xx / 3) * torch.cos(yy / 5)
    b = torch.rand(2, 3, 32, 32, generator=g) * 0.5 + 0.25 * (1 + torch.cos((xx + yy) / 4))
    return torch.cat([a.expand(2, 1, 32, 32), b.clamp(0, 1)], dim=1) * 2 - 1


@pytest.mark.slow
def test_stage1_loss_decreases_with_adam(tiny_config):
    torch.manual_seed(0)
    model, diffusion = DGDFusionModel(tiny_config), GaussianDiffusion(tiny_config.diffusion)
    x0, g = fixed_batch(), torch.Generator().manual_seed(1)
    t, noise = torch.tensor([20, 400]), torch.randn(x0.shape, generator=g)
    optimizer = torch.optim.Adam(model.unet.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        loss = diffusion.training_loss(model.unet, x0, t, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_stage2_loss_decreases_with_adam_and_the_unet_frozen(tiny_config):
    torch.manual_seed(0)
    pipeline = DGDFusionModel(tiny_config)
    pipeline.unet.requires_grad_(False)
    x0 = fixed_batch()
    timesteps = tiny_config.head.feature_timesteps
    noise = torch.randn((len(timesteps) * 2, 4, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, _ = pipeline.features(x0, timesteps, GaussianDiffusion(tiny_config.diffusion), noise)
    a, b = (x0[:, :1] + 1) / 2, (x0[:, 1:] + 1) / 2
    y_b = (b * torch.tensor(LUMA_WEIGHTS)[:, None, None]).sum(dim=1, keepdim=True)  # (2, 1, 32, 32)
    t = torch.tensor([timesteps]).expand(2, -1)
    unet_before = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    loss_fn = FusionLoss(tiny_config.loss)
    optimizer = torch.optim.Adam(pipeline.head.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        loss = loss_fn(pipeline.head(a, y_b, features, t).y_fused, a, y_b).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(v, pipeline.unet.state_dict()[k]) for k, v in unet_before.items())

"""DenoisingUNet and CrossLayerFusionHead on every preset at test size: shapes, NaN, gradients, intermediates."""

import dataclasses

import pytest
import torch

from conftest import ALL_PRESETS, tiny
from fusion_core.config import PRESETS
from fusion_core.diffusion import GaussianDiffusion
from fusion_core.layers.embeddings import FeatureWiseAffine
from fusion_core.losses import FusionLoss
from fusion_core.models.fusion_head import CrossLayerFusionHead
from fusion_core.models.unet import DenoisingUNet

SIZE = 32
TIMESTEPS = torch.tensor([[5, 50, 100], [5, 50, 100]])  # (B, T) feature timesteps for a batch of two


def build_unet(name):
    torch.manual_seed(0)
    return DenoisingUNet(tiny(PRESETS[name]).unet)


def build_head(name):
    torch.manual_seed(0)
    config = tiny(PRESETS[name])
    return CrossLayerFusionHead(config.head, config.unet)


def decoder_shapes(unet_config, batch, size):
    """(B, C_i, H_i, W_i) of each decoder stage, deepest first, for a size x size input."""
    widths = tuple(reversed(unet_config.channels))
    inner = size // unet_config.space_to_depth
    depth = len(widths)
    return [(batch, w, inner >> (depth - i), inner >> (depth - i)) for i, w in enumerate(widths, start=1)]


def random_features(name, batch, size, generator):
    """Stand-in UNet decoder features, timesteps stacked on channels: (B, T * C_i, H_i, W_i)."""
    config = tiny(PRESETS[name])
    num_t = len(config.head.feature_timesteps)
    return [torch.randn(b, num_t * c, h, w, generator=generator)
            for b, c, h, w in decoder_shapes(config.unet, batch, size)]


def unfreeze_film(module, generator):
    """Give every zero-initialised FiLM projection small random weights.

    FiLM starts as the identity (its projection is zero), so at initialisation the time MLP that feeds only
    FiLM layers gets an exactly zero gradient; after one optimiser step it does not. Moving the projections
    off zero makes the gradient test check that the path exists.
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, FeatureWiseAffine):
                linear = layer.proj[1]
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.1)


def assert_every_parameter_has_gradient(module):
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_unet_shapes_and_no_nan(name):
    unet = build_unet(name).eval()
    x_t = torch.randn(2, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = unet.forward_features(x_t, torch.tensor([3, 700]))
    assert out.eps.shape == (2, 4, SIZE, SIZE)
    assert torch.isfinite(out.eps).all()
    assert [tuple(f.shape) for f in out.features] == decoder_shapes(unet.config, 2, SIZE)
    assert all(torch.isfinite(f).all() for f in out.features)
    assert out.intermediates is None


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_stage1_loss_reaches_every_unet_parameter(name):
    g = torch.Generator().manual_seed(2)
    unet = build_unet(name)
    unfreeze_film(unet, g)
    diffusion = GaussianDiffusion(tiny(PRESETS[name]).diffusion)
    # A mask standardised over space is zero on a 1x1 map (the bottleneck at SIZE): give it 2x2.
    size = 2 * SIZE if PRESETS[name].unet.gfs_standardise_mask else SIZE
    x0 = torch.rand(2, 4, size, size, generator=g) * 2 - 1
    loss = diffusion.training_loss(unet, x0, torch.tensor([10, 600]), generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_has_gradient(unet)


@pytest.mark.parametrize("size", [(32, 48), (40, 32), (16, 16), (33, 64)])
def test_unet_refuses_sides_not_divisible_by_its_stride(size):
    unet = build_unet("ALL")
    assert unet.config.stride == 32
    with pytest.raises(ValueError, match="divisible by 32"):
        unet(torch.zeros(1, 4, *size), torch.tensor([0]))


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_intermediates_follow_the_module_switches(name):
    unet = build_unet(name).eval()
    with torch.no_grad():
        record = unet.forward_features(torch.zeros(1, 4, SIZE, SIZE), torch.tensor([5]), True).intermediates
    stages = [f"{side}{i}" for side in ("down", "up") for i in range(1, 5)]
    assert set(record.experts) == (set(stages) if unet.config.use_dfe else set())
    gated = {*stages, "mid"} if unet.config.use_gfs else set()
    assert set(record.gates) == set(record.gate_activity) == gated
    for layer, activity in record.gate_activity.items():
        assert activity.shape == (1, 4) and ((activity >= 0) & (activity <= 1)).all(), layer


@pytest.mark.parametrize("name", ["ALL", "DFE_3", "DFE_5"])
def test_expert_weights_sum_to_one_and_change_with_the_timestep(name):
    unet = build_unet(name).eval()
    x_t = torch.randn(1, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3)).repeat(2, 1, 1, 1)
    with torch.no_grad():
        record = unet.forward_features(x_t, torch.tensor([5, 900]), return_intermediates=True).intermediates
    alphas = record.experts
    assert len(alphas) == 8
    for key, alpha in alphas.items():
        assert alpha.shape == (2, unet.config.num_experts), key
        assert (alpha > 0).all(), key
        torch.testing.assert_close(alpha.sum(-1), torch.ones(2))
    # same x_t, different timesteps: the time term of the gate must move the mixture
    assert (alphas["down1"][0] - alphas["down1"][1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["ALL", "DFE+GCFS", "GCFS+GLSA"])
def test_gfs_gates_lie_in_the_open_unit_interval(name):
    unet = build_unet(name).eval()
    x_t = torch.randn(2, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        record = unet.forward_features(x_t, torch.tensor([0, 999]), return_intermediates=True).intermediates
    gates = record.gates
    assert len(gates) == 9
    for key, gate in gates.items():
        assert gate.ndim == 4 and gate.shape[:2] == (2, 1), key
        assert ((gate > 0) & (gate < 1)).all(), key
    assert gates["down1"].shape[-2:] == (SIZE // 2, SIZE // 2)
    assert gates["mid"].shape[-2:] == (1, 1)


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_head_shapes_range_and_no_nan(name):
    g = torch.Generator().manual_seed(5)
    head = build_head(name).eval()
    a, y_b = torch.rand(2, 1, SIZE, SIZE, generator=g), torch.rand(2, 1, SIZE, SIZE, generator=g)
    with torch.no_grad():
        out = head(a, y_b, random_features(name, 2, SIZE, g), TIMESTEPS, return_intermediates=True)
    assert out.y_fused.shape == (2, 1, SIZE, SIZE)
    assert torch.isfinite(out.y_fused).all()
    assert ((out.y_fused >= 0) & (out.y_fused <= 1)).all()
    s = head.config.head_downsample
    weight = out.weight_map
    assert weight.shape == (2, 1, SIZE, SIZE) and ((weight >= 0) & (weight <= 1)).all()
    if head.config.use_glsa:
        assert set(out.attention) == {"glsa1", "glsa2"}
        for m_c in out.attention.values():
            assert m_c.shape == (2, 1, SIZE // s, SIZE // s)
            assert ((m_c > 0) & (m_c < 1)).all()
    else:
        assert out.attention == {}


def randomise_last_conv(head, generator, scale=0.5):
    """Move the head's zero-initialised last convolution off zero (as one optimiser step would)."""
    last = head.reconstruct[-1]
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * scale)
        last.bias.copy_(torch.randn(last.bias.shape, generator=generator) * scale)


def test_untrained_weight_map_head_gives_the_average():
    g = torch.Generator().manual_seed(9)
    head = build_head("ALL").eval()
    a, y_b = torch.rand(2, 1, SIZE, SIZE, generator=g), torch.rand(2, 1, SIZE, SIZE, generator=g)
    with torch.no_grad():
        out = head(a, y_b, random_features("ALL", 2, SIZE, g), TIMESTEPS, return_intermediates=True)
    torch.testing.assert_close(out.y_fused, (a + y_b) / 2)
    torch.testing.assert_close(out.weight_map, torch.full_like(a, 0.5))


def test_weight_map_shares_sum_to_one_and_the_detail_is_bounded():
    g = torch.Generator().manual_seed(10)
    head = build_head("ALL").eval()
    randomise_last_conv(head, g)
    a, y_b = torch.rand(2, 1, SIZE, SIZE, generator=g), torch.rand(2, 1, SIZE, SIZE, generator=g)
    with torch.no_grad():
        out = head(a, y_b, random_features("ALL", 2, SIZE, g), TIMESTEPS, return_intermediates=True)
    w = out.weight_map
    assert (w - 0.5).abs().mean() > 0.05  # no longer the initial 0.5
    base = w * a + (1 - w) * y_b  # B's share is what A's leaves: the two shares sum to one
    detail = out.y_fused - base
    inside = (out.y_fused > 0) & (out.y_fused < 1)  # where the clip to [0, 1] did not act
    assert detail.abs().max() <= head.config.residual_scale + 1e-6
    assert detail[inside].abs().max() > 0.01
    assert ((out.y_fused >= 0) & (out.y_fused <= 1)).all()


def test_intensity_head_predicts_the_fused_image_directly():
    torch.manual_seed(0)
    config = tiny(PRESETS["ALL"])
    head = CrossLayerFusionHead(dataclasses.replace(config.head, output="intensity"), config.unet).eval()
    g = torch.Generator().manual_seed(11)
    a = torch.rand(1, 1, SIZE, SIZE, generator=g)
    with torch.no_grad():
        out = head(a, a, random_features("ALL", 1, SIZE, g), TIMESTEPS[:1], return_intermediates=True)
    assert head.reconstruct[-1].out_channels == 1 and out.weight_map is None
    assert set(out.attention) == {"glsa1", "glsa2"}
    assert ((out.y_fused > 0) & (out.y_fused < 1)).all()


def test_head_records_nothing_unless_asked():
    g = torch.Generator().manual_seed(6)
    head = build_head("ALL").eval()
    a = torch.rand(2, 1, SIZE, SIZE, generator=g)
    with torch.no_grad():
        out = head(a, a, random_features("ALL", 2, SIZE, g), TIMESTEPS)
    assert out.attention == {} and out.weight_map is None


def test_head_resizes_features_to_a_source_of_another_size():
    g = torch.Generator().manual_seed(7)
    head = build_head("ALL").eval()
    a, y_b = torch.rand(1, 1, 38, 54, generator=g), torch.rand(1, 1, 38, 54, generator=g)
    with torch.no_grad():
        y = head(a, y_b, random_features("ALL", 1, SIZE, g), TIMESTEPS[:1]).y_fused
    assert y.shape == (1, 1, 38, 54) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_fusion_loss_reaches_every_head_parameter(name):
    g = torch.Generator().manual_seed(8)
    head = build_head(name)
    unfreeze_film(head, g)
    randomise_last_conv(head, g, scale=0.1)
    a, y_b = torch.rand(2, 1, SIZE, SIZE, generator=g), torch.rand(2, 1, SIZE, SIZE, generator=g)
    y_fused = head(a, y_b, random_features(name, 2, SIZE, g), TIMESTEPS).y_fused
    loss = FusionLoss(tiny(PRESETS[name]).loss)(y_fused, a, y_b).total
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_has_gradient(head)

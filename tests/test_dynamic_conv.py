"""The grouped-convolution DFE against the paper's unfold + einsum form (eq. 4), kept here as the reference."""

import pytest
import torch
import torch.nn.functional as F

from fusion_core.layers.dynamic_conv import DynamicConv2d, DynamicFeatureExtractor, ExpertGate


def unfold_einsum_reference(x, weight, bias, alpha):
    """Eqs. 3-6 as the paper writes them: mix kernels, unfold patches, einsum, fold back to (H, W)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    mixed = torch.einsum("bm,moikl->boikl", alpha, weight)  # (B, C_out, C_in, K, K), eq. 3
    mixed_bias = alpha @ bias  # (B, C_out)
    patches = F.unfold(x, k, padding=k // 2)  # (B, C_in K K, L), eq. 5
    y = torch.einsum("bel,boe->bol", patches, mixed.flatten(2)) + mixed_bias[:, :, None]  # eq. 4
    return y.reshape(b, -1, h, w)  # eq. 6


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("experts", [3, 4, 5])
def test_grouped_conv_matches_unfold_einsum(batch, kernel_size, experts):
    g = torch.Generator().manual_seed(batch * 100 + kernel_size * 10 + experts)
    conv = DynamicConv2d(6, experts, kernel_size)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    x = torch.randn(batch, 6, 9, 11, generator=g)
    alpha = torch.rand(batch, experts, generator=g).softmax(-1)
    with torch.no_grad():
        fast = conv(x, alpha)
        reference = unfold_einsum_reference(x, conv.weight, conv.bias, alpha)
    relative = (fast - reference).abs().max() / reference.abs().max()
    assert fast.shape == x.shape
    assert relative <= 1e-5


def test_expert_weights_sum_to_one_and_follow_the_timestep():
    torch.manual_seed(0)
    gate = ExpertGate(8, 4, 16)
    x = torch.randn(3, 8, 6, 6)
    t_emb_a, t_emb_b = torch.randn(3, 16), torch.randn(3, 16)
    alpha_a, alpha_b = gate(x, t_emb_a), gate(x, t_emb_b)
    assert alpha_a.shape == (3, 4)
    torch.testing.assert_close(alpha_a.sum(-1), torch.ones(3))
    assert (alpha_a - alpha_b).abs().max() > 1e-4


def test_dfe_returns_features_and_alpha():
    torch.manual_seed(0)
    dfe = DynamicFeatureExtractor(5, 8, num_experts=3, kernel_size=3, time_embed_dim=16, norm_groups=4)
    h, alpha = dfe(torch.randn(2, 5, 7, 9), torch.randn(2, 16))
    assert h.shape == (2, 8, 7, 9) and alpha.shape == (2, 3)
    assert torch.isfinite(h).all()

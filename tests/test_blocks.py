"""Per layer: shapes, no NaN, gates in (0, 1), FiLM identity at initialisation, gradients reach parameters."""

import pytest
import torch

from fusion_core.layers.common import ConcatFusion, PlainConvBlock, PlainResidualBlock, crop_back, pad_to_multiple
from fusion_core.layers.embeddings import FeatureWiseAffine, TimeEmbedding, timestep_embedding
from fusion_core.layers.gated import GatedFeatureSelection, gate_activity
from fusion_core.layers.glsa import GlobalLocalAttention
from fusion_core.layers.restormer import LayerNorm2d, RTransformerBlock


def assert_every_parameter_gets_gradient(module, output):
    output.square().mean().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_timestep_embedding_is_distinct_per_timestep():
    e = timestep_embedding(torch.tensor([0, 5, 50]), 16)
    assert e.shape == (3, 16)
    assert torch.cdist(e, e)[~torch.eye(3, dtype=bool)].min() > 0.1


def test_time_embedding_of_a_set_of_timesteps():
    torch.manual_seed(0)
    embed = TimeEmbedding(16, num_timesteps=3)
    out = embed(torch.tensor([[5, 50, 100], [10, 60, 90]]))
    assert out.shape == (2, 16)
    assert (out[0] - out[1]).abs().max() > 0


def test_feature_wise_affine_is_identity_at_init():
    film = FeatureWiseAffine(16, 8)
    h = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(film(h, torch.randn(2, 16)), h)


def test_gated_feature_selection():
    torch.manual_seed(0)
    gfs = GatedFeatureSelection(6, 8, time_embed_dim=16, norm_groups=2, dropout=0.0)
    x = torch.randn(2, 6, 9, 7)
    out, gate = gfs(x, torch.randn(2, 16))
    assert out.shape == (2, 8, 9, 7) and gate.shape == (2, 8, 9, 7)
    assert ((gate > 0) & (gate < 1)).all()
    assert_every_parameter_gets_gradient(gfs, out)


def _default_form(gfs: GatedFeatureSelection) -> GatedFeatureSelection:
    """The same block with PyTorch's default initialisation and a raw (unbounded) channel MLP: the form of
    the first checkpoints, whose gates stayed at a flat 0.5."""
    gfs.spatial.reset_parameters()
    gfs.channel = torch.nn.Sequential(*list(gfs.channel)[:3])
    gfs.channel[2].reset_parameters()
    return gfs


def _spatial_gradient_and_spread(gfs: GatedFeatureSelection) -> tuple[float, float]:
    x, t_emb = torch.randn(4, 16, 24, 24), torch.randn(4, 16)
    out, gate = gfs(x, t_emb)
    out.square().mean().backward()
    return gfs.spatial.weight.grad.norm().item(), gate_activity(gate.detach())[:, 0].mean().item()


def test_gate_starts_open_to_learning():
    """At initialisation the spatial mask gets a real gradient and the gate varies over the map."""
    grads, spreads = [], []
    for form in (lambda g: g, _default_form):
        torch.manual_seed(0)
        gfs = form(GatedFeatureSelection(16, 16, time_embed_dim=16, norm_groups=4, dropout=0.0))
        torch.nn.init.normal_(gfs.out[-1].weight, std=0.1)  # let the gradient reach the gate through eq. 8
        torch.manual_seed(1)
        grad, spread = _spatial_gradient_and_spread(gfs)
        grads.append(grad)
        spreads.append(spread)
    assert grads[0] > 0 and grads[0] > 2 * grads[1], grads
    assert spreads[0] > 0.05 > spreads[1], spreads


def test_mask_norm_keeps_the_spatial_mask_independent_of_the_expansion_scale():
    """With ``mask_norm`` the mask's input is normalised, so shrinking the expansion's mask half (what stage 1
    did to flatten the plain gate) leaves the spatial mask s as it was; without it, s shrinks with it."""
    x = torch.randn(2, 16, 24, 24)
    for mask_norm in (True, False):
        torch.manual_seed(0)
        gfs = GatedFeatureSelection(16, 16, time_embed_dim=16, norm_groups=4, dropout=0.0, mask_norm=mask_norm)
        masks = []
        for scale in (1.0, 0.1):
            with torch.no_grad():
                gfs.expand.weight[16:] *= scale
                gfs.expand.bias[16:] *= scale
                h2 = gfs.expand(gfs.norm_in(x))[:, 16:]
                masks.append(gfs.spatial(gfs.norm_mask(h2)))
        spreads = [m.flatten(2).std(dim=2).mean().item() for m in masks]
        if mask_norm:
            assert spreads[1] == pytest.approx(spreads[0], rel=1e-2)
        else:
            assert spreads[1] == pytest.approx(0.1 * spreads[0], rel=1e-2)


def test_standardised_mask_keeps_the_gate_independent_of_the_mask_weights_scale():
    """With ``standardise_mask`` each channel's mask logit has spatial spread c (its channel attention) whatever
    the scale of the spatial weights, so stage 1 cannot flatten the gate by shrinking them; without it, it can."""
    x, t_emb = torch.randn(2, 16, 24, 24), torch.randn(2, 16)
    for standardise in (True, False):
        torch.manual_seed(0)
        gfs = GatedFeatureSelection(16, 16, time_embed_dim=16, norm_groups=4, dropout=0.0,
                                    standardise_mask=standardise)
        spreads = []
        for scale in (1.0, 0.1):
            with torch.no_grad():
                gfs.spatial.weight *= scale
                gfs.spatial.bias.fill_(0.3)
                spreads.append(gate_activity(gfs(x, t_emb)[1])[:, 0].mean().item())
        if standardise:
            assert spreads[1] == pytest.approx(spreads[0], rel=1e-3) and spreads[0] > 0.15
        else:
            assert spreads[1] < 0.2 * spreads[0]


def test_standardised_mask_logit_spread_is_the_channel_attention():
    torch.manual_seed(0)
    gfs = GatedFeatureSelection(8, 8, time_embed_dim=16, norm_groups=4, dropout=0.0, standardise_mask=True)
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        _, gate = gfs(x, torch.randn(1, 16))
        h2 = gfs.expand(gfs.norm_in(x)).chunk(2, dim=1)[1]
        c = gfs.channel(h2.mean(dim=(2, 3)))[0]  # (C,)
    logit = torch.logit(gate.double())  # s * c
    assert logit.mean(dim=(2, 3))[0] == pytest.approx(torch.zeros(8, dtype=torch.float64), abs=1e-4)
    spread = logit.flatten(2).std(dim=2, unbiased=False)[0]
    assert spread.float() == pytest.approx(c, rel=1e-3)


def test_standardised_mask_of_a_single_pixel_map_is_a_half_open_gate():
    gfs = GatedFeatureSelection(8, 8, time_embed_dim=16, norm_groups=4, dropout=0.0, standardise_mask=True)
    _, gate = gfs(torch.randn(2, 8, 1, 1), torch.randn(2, 16))
    assert torch.equal(gate, torch.full_like(gate, 0.5))


def test_mask_norm_adds_its_parameters_to_the_gate_parameters():
    plain = GatedFeatureSelection(16, 16, time_embed_dim=16, norm_groups=4, dropout=0.0)
    normed = GatedFeatureSelection(16, 16, time_embed_dim=16, norm_groups=4, dropout=0.0, mask_norm=True)
    assert len(normed.gate_parameters()) == len(plain.gate_parameters()) + 2  # the GroupNorm's weight and bias


def test_gate_activity_of_a_hand_made_gate():
    gate = torch.full((1, 2, 2, 2), 0.5)
    gate[0, 0] = torch.tensor([[0.1, 0.9], [0.1, 0.9]])  # channel 0: std 0.4, two values low, two high
    activity = gate_activity(gate)
    # std mean (0.4 + 0) / 2; a 2x2 map has no interior, so the last column repeats the first
    torch.testing.assert_close(activity, torch.tensor([[0.2, 0.25, 0.25, 0.2]]))
    assert gate_activity(torch.full((3, 4, 5, 5), 0.5)).abs().sum() == 0


def test_gate_activity_leaves_the_border_out_of_the_interior_spread():
    gate = torch.full((1, 1, 9, 9), 0.5)
    gate[..., 0, :] = 0.9  # a bright top edge, as zero padding leaves on a trained gate
    spread, _, high, interior = gate_activity(gate)[0].tolist()
    assert spread == pytest.approx(0.4 * (8 ** 0.5) / 9) and high == pytest.approx(9 / 81)
    assert interior == 0  # the 5x5 interior is flat
    gate[..., 4, 4] = 0.1  # one dark pixel inside: the interior sees it
    assert gate_activity(gate)[0, 3].item() == pytest.approx(0.4 * (24 ** 0.5) / 25)


def test_gated_feature_selection_keeps_width_with_identity_residual():
    gfs = GatedFeatureSelection(8, 8, time_embed_dim=16, norm_groups=2, dropout=0.0)
    assert isinstance(gfs.residual, torch.nn.Identity)


def test_layer_norm_normalises_channels():
    x = torch.randn(2, 8, 4, 4) * 5 + 3
    y = LayerNorm2d(8)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 4, 4), atol=1e-3, rtol=0)


def test_r_transformer_block():
    torch.manual_seed(0)
    block = RTransformerBlock(8, 2, 2.0)
    x = torch.randn(2, 8, 11, 13)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert_every_parameter_gets_gradient(block, out)


def test_global_local_attention():
    torch.manual_seed(0)
    glsa = GlobalLocalAttention(16, 8, 2)
    out, m_c = glsa(torch.randn(2, 8, 10, 6), torch.randn(2, 8, 10, 6))
    assert out.shape == (2, 8, 10, 6) and m_c.shape == (2, 1, 10, 6)
    assert ((m_c > 0) & (m_c < 1)).all()
    assert_every_parameter_gets_gradient(glsa, out)


@pytest.mark.parametrize("block", [
    PlainConvBlock(4, 8, kernel_size=3, norm_groups=2),
    PlainResidualBlock(4, 8, time_embed_dim=16, norm_groups=2, dropout=0.0),
])
def test_ablation_fallbacks_report_nothing(block):
    out, record = block(torch.randn(1, 4, 6, 6), torch.randn(1, 16))
    assert out.shape == (1, 8, 6, 6) and record is None


def test_concat_fusion():
    out, record = ConcatFusion(12, 8)(torch.randn(1, 4, 5, 5), torch.randn(1, 8, 5, 5))
    assert out.shape == (1, 8, 5, 5) and record is None


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (37, 53), (64, 64)])
def test_pad_to_multiple_and_crop_back(size):
    x = torch.arange(size[0] * size[1], dtype=torch.float32).reshape(1, 1, *size)
    padded, original = pad_to_multiple(x, 16)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    torch.testing.assert_close(crop_back(padded, original), x)

"""GaussianDiffusion: schedule values pinned by hand, q_sample statistics, the loss, reverse steps and sampling."""

import math

import pytest
import torch
from torch import nn

from fusion_core.config import DiffusionConfig
from fusion_core.diffusion import GaussianDiffusion

T = 1000
BETA_1 = 1e-4 + (2e-2 - 1e-4) / (T - 1)  # the second beta of the linear schedule, float64


@pytest.fixture
def diffusion():
    return GaussianDiffusion(DiffusionConfig())


def abar(t):
    """alpha-bar_t of the default schedule, by hand in float64."""
    return math.prod(1 - (1e-4 + (2e-2 - 1e-4) * i / (T - 1)) for i in range(t + 1))


def zero_model(x_t, t):
    return torch.zeros_like(x_t)


def test_schedule_end_points_are_pinned(diffusion):
    assert diffusion.betas.dtype == torch.float32 and diffusion.betas.shape == (T,)
    assert diffusion.betas[0] == torch.tensor(1e-4, dtype=torch.float32)
    assert diffusion.betas[-1] == torch.tensor(2e-2, dtype=torch.float32)
    assert diffusion.betas[1] == torch.tensor(BETA_1, dtype=torch.float32)


def test_alphas_cumprod_by_hand(diffusion):
    assert diffusion.alphas_cumprod[0] == torch.tensor(1 - 1e-4, dtype=torch.float32)
    assert diffusion.alphas_cumprod[1] == torch.tensor((1 - 1e-4) * (1 - BETA_1), dtype=torch.float32)
    torch.testing.assert_close(diffusion.alphas_cumprod[-1].double(), torch.tensor(abar(T - 1), dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_schedule_is_built_in_float64(diffusion):
    # sqrt(1 - abar_0) = sqrt(1e-4) = 1e-2; computed in float32, 1 - float32(0.9999) is off by 8e-5 relative
    torch.testing.assert_close(diffusion.sqrt_one_minus_alphas_cumprod[0].double(),
                               torch.tensor(1e-2, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(diffusion.eps_coef[0].double(), torch.tensor(1e-2, dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_posterior_std_by_hand(diffusion):
    assert diffusion.posterior_std[0] == 0
    expected = math.sqrt(BETA_1 * (1 - abar(0)) / (1 - abar(1)))
    torch.testing.assert_close(diffusion.posterior_std[1].double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_signal_and_noise_coefficients_are_consistent(diffusion):
    total = diffusion.sqrt_alphas_cumprod ** 2 + diffusion.sqrt_one_minus_alphas_cumprod ** 2
    torch.testing.assert_close(total, torch.ones(T))
    assert (diffusion.alphas_cumprod[1:] < diffusion.alphas_cumprod[:-1]).all()


@pytest.mark.parametrize("t", [0, 100, 999])
def test_q_sample_statistics(diffusion, t):
    g = torch.Generator().manual_seed(t)
    x0 = torch.full((4096, 1, 4, 4), 0.5)
    x_t = diffusion.q_sample(x0, torch.full((4096,), t), generator=g)
    mean, std = math.sqrt(abar(t)) * 0.5, math.sqrt(1 - abar(t))
    n = x_t.numel()
    assert abs(x_t.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(x_t.std().item() / std - 1) < 0.02


def test_q_sample_with_given_noise_is_the_formula(diffusion):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 999])
    expected = torch.stack([math.sqrt(abar(s)) * x0[i] + math.sqrt(1 - abar(s)) * noise[i]
                            for i, s in enumerate(t.tolist())])
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise=noise), expected, rtol=1e-5, atol=1e-6)


def test_q_sample_draws_from_the_generator(diffusion):
    x0, t = torch.zeros(2, 4, 8, 8), torch.tensor([10, 10])
    first = diffusion.q_sample(x0, t, generator=torch.Generator().manual_seed(1))
    again = diffusion.q_sample(x0, t, generator=torch.Generator().manual_seed(1))
    other = diffusion.q_sample(x0, t, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_p_sample_at_t0_is_the_deterministic_mean(diffusion):
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.zeros(2, dtype=torch.long)

    def model(x, t):
        return 0.5 * x

    one = diffusion.p_sample(model, x_t, t, generator=torch.Generator().manual_seed(1))
    two = diffusion.p_sample(model, x_t, t, generator=torch.Generator().manual_seed(2))
    assert one.shape == x_t.shape
    assert torch.equal(one, two)
    expected = (x_t - 1e-4 / math.sqrt(1e-4) * 0.5 * x_t) / math.sqrt(1 - 1e-4)
    torch.testing.assert_close(one, expected)


def test_p_sample_adds_noise_of_the_posterior_std_when_t_is_positive(diffusion):
    x_t, t = torch.zeros(1024, 1, 4, 4), torch.full((1024,), 500)
    one = diffusion.p_sample(zero_model, x_t, t, generator=torch.Generator().manual_seed(1))
    two = diffusion.p_sample(zero_model, x_t, t, generator=torch.Generator().manual_seed(2))
    assert one.shape == x_t.shape
    # with a zero model and x_t = 0 the mean is 0, so the sample is pure posterior noise
    assert abs(one.std().item() / diffusion.posterior_std[500].item() - 1) < 0.03
    assert not torch.equal(one, two)


def test_sample_shape_progress_and_determinism():
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=10))
    calls = []
    x = diffusion.sample(zero_model, (2, 4, 8, 8), generator=torch.Generator().manual_seed(0),
                         progress=lambda done, total: calls.append((done, total)))
    again = diffusion.sample(zero_model, (2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 4, 8, 8) and torch.isfinite(x).all()
    assert calls == [(i, 10) for i in range(1, 11)]
    assert torch.equal(x, again)


def test_training_loss_is_a_scalar_that_depends_on_the_model(diffusion):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(2, 4, 8, 8, generator=g) * 2 - 1, torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([3, 700])

    def oracle(x_t, t):  # recovers the noise exactly from x_t, knowing x0
        return (x_t - diffusion.sqrt_alphas_cumprod[t][:, None, None, None] * x0) / \
            diffusion.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]

    zero_loss = diffusion.training_loss(zero_model, x0, t, noise)
    assert zero_loss.ndim == 0
    torch.testing.assert_close(zero_loss, noise.square().mean())
    assert diffusion.training_loss(oracle, x0, t, noise) < 1e-8


def test_training_loss_draws_t_and_noise_from_the_generator_and_trains_the_model(diffusion):
    torch.manual_seed(0)
    model = nn.Conv2d(4, 4, 3, padding=1)
    x0 = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    first = diffusion.training_loss(lambda x, t: model(x), x0, generator=torch.Generator().manual_seed(1))
    again = diffusion.training_loss(lambda x, t: model(x), x0, generator=torch.Generator().manual_seed(1))
    other = diffusion.training_loss(lambda x, t: model(x), x0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    first.backward()
    assert model.weight.grad.abs().sum() > 0

"""The Gaussian diffusion process of DGD-Fusion (paper eqs. 1-2; docs/design.md §2.1).

The process owns the schedule and takes the noise predictor as an argument; it owns no network.
The schedule is computed in float64 and stored as float32 buffers.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, §1.1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffusionConfig

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gather(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values (T,) indexed by t (B,) -> (B, 1, 1, 1) for broadcasting over images."""
    return values[t][:, None, None, None]


class GaussianDiffusion(nn.Module):
    """DDPM with a linear beta schedule: forward noising (eq. 1), the stage-1 loss, ancestral sampling (eq. 2)."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_timesteps, dtype=torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # posterior q(x_{t-1} | x_t, x_0) variance; sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "eps_coef": betas / (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas": alphas.rsqrt(),
            "posterior_std": posterior_variance.sqrt(),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 1: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. x0 (B, C, H, W), t (B,) -> (B, C, H, W)."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return _gather(self.sqrt_alphas_cumprod, t) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def training_loss(self, model: NoisePredictor, x0: torch.Tensor, t: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Stage-1 loss: MSE(eps, eps_theta(x_t, t)), t uniform in [0, T) unless given. Returns a scalar."""
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return F.mse_loss(model(self.q_sample(x0, t, noise), t), noise)

    @torch.no_grad()
    def p_sample(self, model: NoisePredictor, x_t: torch.Tensor, t: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 2: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) + sigma_t z.

        No noise is added at t = 0. x_t (B, C, H, W), t (B,) -> (B, C, H, W).
        """
        eps = model(x_t, t)
        mean = _gather(self.sqrt_recip_alphas, t) * (x_t - _gather(self.eps_coef, t) * eps)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + _gather(self.posterior_std, t) * z * (t > 0).float()[:, None, None, None]

    @torch.no_grad()
    def sample(self, model: NoisePredictor, shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None
               ) -> torch.Tensor:
        """Ancestral sampling from pure noise through all T reverse steps. Returns x_0 of ``shape``."""
        x = torch.randn(shape, generator=generator, device=device)
        for i, step in enumerate(reversed(range(self.num_timesteps))):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x = self.p_sample(model, x, t, generator=generator)
            if progress is not None:
                progress(i + 1, self.num_timesteps)
        return x

"""DGDFusionModel: the whole DGD-Fusion network, the denoising UNet and the fusion head in one nn.Module.

Training and inference call the same two methods: ``features`` (the UNet's decoder features of x_0 noised
to each feature timestep, eq. 1) and ``forward`` (those features, then the head: fused luminance). The
diffusion process is not part of the network (docs/design.md, as in diffusers and improved-diffusion): it
is passed in, and the network never sees betas. ``build_model`` is the one place fresh weights are drawn
from a seeded generator.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, §1 and §2.1.1.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from einops import rearrange
from torch import nn

from ..config import FusionConfig, FusionHeadConfig
from .fusion_head import CrossLayerFusionHead, FusionHeadOutput
from .unet import DenoisingUNet, UNetIntermediates


class NoiseSchedule(Protocol):
    """What ``DGDFusionModel`` needs of a diffusion process (``diffusion.GaussianDiffusion``): eq. 1."""

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass
class DGDFusionOutput:
    """What ``DGDFusionModel.forward`` returns.

    Attributes:
        y_fused: fused luminance (B, 1, H, W) in [0, 1].
        head: the head's whole output (attention maps, weight map).
        unet: the UNet's intermediates with its batch of T * B, timestep-major; None unless asked for.
    """

    y_fused: torch.Tensor
    head: FusionHeadOutput
    unet: UNetIntermediates | None = None


class DGDFusionModel(nn.Module):
    """The DGD-Fusion network: ``unet`` (eps_theta, stage 1) and ``head`` (stage 2), built from a FusionConfig.

    Its state dict holds ``unet.*`` and ``head.*``, the keys of a checkpoint's model.safetensors.
    """

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        self.unet = DenoisingUNet(config.unet)
        self.head = CrossLayerFusionHead(config.head, config.unet)

    @property
    def stride(self) -> int:
        """Input sides must be multiples of this (the UNet's and the head's downsampling)."""
        return math.lcm(self.config.unet.stride, self.config.head.head_downsample)

    def features(self, x0: torch.Tensor, timesteps: tuple[int, ...], diffusion: NoiseSchedule, noise: torch.Tensor,
                 return_intermediates: bool = False) -> tuple[list[torch.Tensor], UNetIntermediates | None]:
        """Noise x0 (B, 4, H, W) to each timestep (eq. 1) and run the UNet once on all of them.

        All T timesteps go through the UNet as one batch of T * B. Measured on a 2-core CPU for a 640x512
        input of the ``cpu`` preset: 0.145 s batched against 0.153 s for T single-sample calls, so the
        batch (which docs/design.md §2.1 describes) stays.

        Args:
            noise: (T * B, 4, H, W), timestep-major.
        Returns:
            Decoder features with timesteps stacked on channels, (B, T * C_i, H_i, W_i), and, when asked,
            the UNet's intermediates with its batch of T * B, timestep-major: "(t b) ...".
        """
        num_t, b = len(timesteps), x0.shape[0]
        t = torch.tensor(timesteps, device=x0.device).repeat_interleave(b)  # (T * B,)
        x_t = diffusion.q_sample(x0.repeat(num_t, 1, 1, 1), t, noise=noise.to(x0.device))
        out = self.unet.forward_features(x_t, t, return_intermediates)
        features = [rearrange(f, "(t b) c h w -> b (t c) h w", t=num_t) for f in out.features]
        return features, out.intermediates

    def forward(self, a: torch.Tensor, y_b: torch.Tensor, x0: torch.Tensor, timesteps: tuple[int, ...],
                diffusion: NoiseSchedule, noise: torch.Tensor, return_intermediates: bool = False
                ) -> DGDFusionOutput:
        """Fuse: a (B, 1, H, W) and y_b (B, 1, H, W) in [0, 1], x0 = concat(A, B_rgb) (B, 4, H, W) in [-1, 1].

        The UNet keeps its gradients only where some of its parameters train (stage 2 with gate tuning);
        otherwise its features are computed without a graph.
        """
        tuned = torch.is_grad_enabled() and any(p.requires_grad for p in self.unet.parameters())
        # 1. UNet features at the feature timesteps
        with torch.set_grad_enabled(tuned):
            features, record = self.features(x0, timesteps, diffusion, noise, return_intermediates)
        # 2. the head reads them with the sources
        t = torch.tensor([timesteps], device=a.device).expand(a.shape[0], -1)  # (B, T)
        head = self.head(a, y_b, features, t, return_intermediates=return_intermediates)
        return DGDFusionOutput(y_fused=head.y_fused, head=head, unet=record)

    def with_head(self, head: FusionHeadConfig, generator: torch.Generator | None = None) -> DGDFusionModel:
        """A model with this UNet (its weights copied) and a fresh head of config ``head`` from ``generator``."""
        model = build_model(replace(self.config, head=head), generator).to(next(self.parameters()).device)
        model.unet.load_state_dict(self.unet.state_dict())
        return model

    def with_head_of(self, donor: DGDFusionModel) -> DGDFusionModel:
        """A model with this UNet and a copy of ``donor``'s head (its config and weights).

        The head reads the UNet's decoder features through 1x1 projections, so the two UNets must have the
        same widths; a trained head carries over to a retrained UNet (docs/training.md measures it)."""
        if donor.config.unet.channels != self.config.unet.channels:
            raise ValueError(f"the head was trained on a UNet of widths {donor.config.unet.channels}; this "
                             f"UNet has {self.config.unet.channels}")
        model = self.with_head(donor.config.head, torch.Generator())  # its draws are overwritten at once
        model.head.load_state_dict(donor.head.state_dict())
        return model


@contextmanager
def drawing_from(generator: torch.Generator | None):
    """Within the block, torch's global CPU generator draws from ``generator``, which then advances by
    what was drawn; the global state is restored afterwards. Nothing changes when ``generator`` is None.

    nn.Module initialisers take no generator argument, so this is how every parameter of a network built in
    the block (whatever its layers' own init schemes) comes from ``generator``.
    """
    if generator is None:
        yield
        return
    if generator.device.type != "cpu":
        raise ValueError(f"weights are initialised on the CPU; pass a CPU generator, not one on {generator.device}")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(generator.get_state())
        yield
        generator.set_state(torch.default_generator.get_state())


def build_model(config: FusionConfig, generator: torch.Generator | None = None) -> DGDFusionModel:
    """Fresh (untrained) weights of ``config``, in eval mode: the one seeded construction of a network.

    Args:
        generator: a CPU generator every initial weight is drawn from (None: torch's global generator).
    """
    with drawing_from(generator):
        return DGDFusionModel(config).eval()

"""Cross-layer attention fusion head of DGD-Fusion (paper §1.3, fig. 4, eqs. 9-16; docs/design.md §2.5).

Reads the two sources (A and the luminance of B) and the denoising UNet's decoder features at a few
small timesteps, and writes the fused luminance Y_F in [0, 1]:

1. overlapping patch embedding of each source (stride s, kernel s + 2);
2. stage 1: an R-Transformer block + FeatureWiseAffine per branch; GLSA fuses the branches -> F1;
3. first cross-layer concatenation: the deep (semantic) UNet decoder features, upsampled, with F1;
   stage 2: a conditioned R-Transformer block, then GLSA with F1 -> F2;
4. second cross-layer concatenation: the UNet's last decoder features, resized, with F2; a final
   conditioned R-Transformer block;
5. reconstruction at full resolution: the result, upsampled, with a shallow full-resolution embedding of
   the sources (which carries the fine detail the reduced-resolution stages cannot) -> 1x1 conv, SiLU,
   3x3 conv, SiLU, 3x3 conv -> the output parametrisation below -> Y_F.

Output parametrisation (ours; the paper is silent). By default the last convolution predicts two logits
and a residual: w = softmax(l_A, l_B) over the two sources, Y_F = clip(w_A Y_A + w_B Y_B + r tanh(d), 0, 1)
with r = ``residual_scale``. The convolution starts at zero, so an untrained head returns the average of
the sources (CC with each source positive) and training only has to learn where to lean towards A or B
and what detail to add. The first checkpoints predicted Y_F = sigmoid(conv) directly, so the head had to
learn the whole intensity mapping first: after 300 steps three of six ablation variants still gave images
anti-correlated with their sources. docs/training.md compares the two forms from the same UNet. The share
w_A is recorded as ``FusionHeadOutput.weight_map``: where the result comes from A (1) and where from B (0).

Our choice, by measurement: the transformer stages run at 1/s resolution (s = ``head_downsample``) and
only the light reconstruction runs at full resolution. On a 2-core CPU one R-Transformer block of 16
channels took 0.32 s on a 640x512 map against 0.034 s at half resolution; the reconstruction takes 0.14 s.

FeatureWiseAffine reads the embedding of the feature timesteps, so the head knows the noise levels of
the features it was given.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FusionHeadConfig, UNetConfig
from ..layers.common import ConcatFusion, zero_module
from ..layers.embeddings import FeatureWiseAffine, TimeEmbedding
from ..layers.glsa import GlobalLocalAttention
from ..layers.restormer import RTransformerBlock

DEEP_FEATURE_INDEX = 1  # the UNet's second decoder stage: semantic, at 1/4 of the UNet's resolution


@dataclass
class FusionHeadOutput:
    """What the head returns; the maps only when asked (``return_intermediates``).

    Attributes:
        y_fused: (B, 1, H, W) in [0, 1].
        attention: GLSA stage ("glsa1", "glsa2") -> its attention M_c, mean over channels (B, 1, H/s, W/s);
            empty without GLSA.
        weight_map: the share of A, w_A (B, 1, H, W) in [0, 1]; None for an intensity head.
    """

    y_fused: torch.Tensor
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    weight_map: torch.Tensor | None = None


class ConditionedBlock(nn.Module):
    """An R-Transformer block followed by FeatureWiseAffine from the feature-timestep embedding."""

    def __init__(self, config: FusionHeadConfig):
        super().__init__()
        self.block = RTransformerBlock(config.channels, config.num_heads, config.ffn_expansion)
        self.film = FeatureWiseAffine(config.time_embed_dim, config.channels)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), t_emb (B, D) -> (B, C, H, W)."""
        return self.film(self.block(x), t_emb)


class CrossLayerFusionHead(nn.Module):
    """(a, y_b, UNet decoder features, feature timesteps) -> Y_F (B, 1, H, W) in [0, 1]."""

    def __init__(self, config: FusionHeadConfig, unet: UNetConfig):
        super().__init__()
        self.config = config
        c, s = config.channels, config.head_downsample
        num_t = len(config.feature_timesteps)
        decoder_widths = tuple(reversed(unet.channels))
        self.time_embed = TimeEmbedding(config.time_embed_dim, num_timesteps=num_t)
        self.embed_a = nn.Conv2d(1, c, s + 2, stride=s, padding=1)
        self.embed_b = nn.Conv2d(1, c, s + 2, stride=s, padding=1)
        self.stage1_a = ConditionedBlock(config)
        self.stage1_b = ConditionedBlock(config)
        self.fuse1 = self._fusion(2 * c, c)
        self.deep_proj = nn.Conv2d(num_t * decoder_widths[DEEP_FEATURE_INDEX], c, 1)
        self.cross1 = nn.Conv2d(2 * c, c, 1)
        self.stage2 = ConditionedBlock(config)
        self.fuse2 = self._fusion(2 * c, c)
        self.last_proj = nn.Conv2d(num_t * decoder_widths[-1], c, 1)
        self.cross2 = nn.Conv2d(2 * c, c, 1)
        self.stage3 = ConditionedBlock(config)
        self.shallow = nn.Conv2d(2, c, 3, padding=1)
        weight_map = config.output == "weight_map"
        last = nn.Conv2d(c, 3 if weight_map else 1, 3, padding=1)  # (l_A, l_B, d) or the Y_F logit
        self.reconstruct = nn.Sequential(nn.Conv2d(2 * c, c, 1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                         nn.SiLU(), zero_module(last) if weight_map else last)

    def _fusion(self, in_channels: int, channels: int) -> nn.Module:
        if self.config.use_glsa:
            return GlobalLocalAttention(in_channels, channels, self.config.num_heads)
        return ConcatFusion(in_channels, channels)

    def forward(self, a: torch.Tensor, y_b: torch.Tensor, features: list[torch.Tensor], t: torch.Tensor,
                return_intermediates: bool = False) -> FusionHeadOutput:
        """Fuse one batch.

        Args:
            a, y_b: (B, 1, H, W) in [0, 1]; H and W multiples of ``head_downsample``.
            features: the UNet's decoder features, timesteps stacked on channels: (B, T * C_i, H_i, W_i).
            t: (B, T) feature timesteps.
            return_intermediates: also return the GLSA attention maps and the weight map.
        Returns:
            FusionHeadOutput with y_fused (B, 1, H, W).
        """
        size, t_emb = a.shape[-2:], self.time_embed(t)
        # 1-2. embed each source; stage 1 per branch; fuse the branches -> F1 (B, C, H/s, W/s)
        h_a = self.stage1_a(self.embed_a(a), t_emb)
        h_b = self.stage1_b(self.embed_b(y_b), t_emb)
        f1, m1 = self.fuse1(h_a, h_b)
        # 3. first cross-layer concatenation with the deep UNet features; stage 2 -> F2 (B, C, H/s, W/s)
        deep = _resize(self.deep_proj(features[DEEP_FEATURE_INDEX]), f1.shape[-2:])
        h = self.stage2(self.cross1(torch.cat([f1, deep], dim=1)), t_emb)
        f2, m2 = self.fuse2(h, f1)
        # 4. second cross-layer concatenation with the UNet's last features; final block (B, C, H/s, W/s)
        last = _resize(self.last_proj(features[-1]), f2.shape[-2:])
        h = self.stage3(self.cross2(torch.cat([f2, last], dim=1)), t_emb)
        # 5. full-resolution reconstruction with the shallow source embedding -> Y_F (B, 1, H, W)
        shallow = self.shallow(torch.cat([a, y_b], dim=1))
        out = self.reconstruct(torch.cat([_resize(h, size), shallow], dim=1))  # (B, 3 or 1, H, W)
        y_fused, weight = self._output(out, a, y_b)
        if not return_intermediates:
            return FusionHeadOutput(y_fused=y_fused)
        attention = {name: m for name, m in (("glsa1", m1), ("glsa2", m2)) if m is not None}
        return FusionHeadOutput(y_fused=y_fused, attention=attention, weight_map=weight)

    def _output(self, out: torch.Tensor, a: torch.Tensor, y_b: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Last conv output -> Y_F (B, 1, H, W) in [0, 1] and, for a weight map, the share of A (B, 1, H, W)."""
        if self.config.output == "intensity":
            return torch.sigmoid(out), None
        weight = torch.softmax(out[:, :2], dim=1)  # (B, 2, H, W): shares of A and B, summing to 1
        base = weight[:, :1] * a + weight[:, 1:] * y_b
        detail = self.config.residual_scale * torch.tanh(out[:, 2:])
        return (base + detail).clamp(0, 1), weight[:, :1]


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, *size); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

"""FusionPipeline: DGD-Fusion inference, numpy in and numpy out, around a ``DGDFusionModel`` and its process.

fuse(a, b): A (gray) and B (gray or RGB) -> B's luminance Y_B (BT.601) -> the pair x_0 = concat(A, B_rgb)
in [-1, 1] is noised to each feature timestep with noise from a generator seeded per call (eq. 1) -> one
UNet pass per timestep -> the fusion head reads the decoder features and the sources (the model's forward,
which training calls too) -> Y_F -> RGB(Y_F, Cb_B, Cr_B) (docs/design.md §1-2). Any size: inputs are
reflect-padded to the network's stride and cropped back; inputs larger than ``tile_size`` are fused in
overlapping tiles blended with linear ramps, so memory is bounded by the tile, not the image.

Paper: Di et al., J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange

from .color import luma, replace_luma
from .config import FusionConfig
from .diffusion import GaussianDiffusion
from .layers.common import crop_back, pad_to_multiple
from .models.dgd_fusion import DGDFusionModel, build_model
from .models.fusion_head import CrossLayerFusionHead, FusionHeadOutput
from .models.unet import DenoisingUNet, UNetIntermediates

DEFAULT_SEED = 0
# Device types on which ``fuse_batch`` runs same-size pairs through the network together. Anywhere else (the
# CPU) each pair has its own pass, which makes a batch's results ``fuse``'s bit for bit (see ``fuse_batch``).
SHARED_PASS_DEVICES = ("cuda",)


@dataclass(frozen=True)
class Intermediates:
    """The network's inner maps for one fusion: numpy, spatial maps cropped to the unpadded input area.

    Layers are named as in the UNet ("down1" ... "down4", "mid", "up1" ... "up4") and in the head ("glsa1",
    "glsa2"). T counts the feature timesteps, in the order of ``FusionResult.timesteps``; h x w is a layer's
    resolution and H x W the input's.

    Attributes:
        experts: DFE layer -> expert weights alpha (T, M); each row sums to 1.
        gates: GFS layer -> gate map g, mean over channels (T, h, w), in (0, 1).
        gate_activity: GFS layer -> (mean per-channel spatial std of g, share of g < 0.2, share of g > 0.8,
            the spread without the border) (T, 4), see ``layers.gated.gate_activity``.
        attention: GLSA stage -> its attention map M_c, mean over channels (h, w), in (0, 1).
        weight_map: the head's share of A, w_A (H, W) in [0, 1]; None for an intensity head.
    """

    experts: dict[str, np.ndarray] = field(default_factory=dict)
    gates: dict[str, np.ndarray] = field(default_factory=dict)
    gate_activity: dict[str, np.ndarray] = field(default_factory=dict)
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    weight_map: np.ndarray | None = None


@dataclass(frozen=True)
class FusionResult:
    """What ``FusionPipeline.fuse`` returns.

    Attributes:
        fused: uint8 (H, W, 3) when B is colour, else (H, W): exactly the input size.
        y_fused: float32 (H, W) fused luminance in [0, 1].
        intermediates: expert weights, gate maps and their activity, attention maps and the weight map
            (``Intermediates``); None unless asked for, and for inputs fused in tiles.
        timesteps: the feature timesteps used.
        tiles: how many tiles the image was fused in (1 when untiled).
        warnings: things a user should know (random weights, intermediates skipped, ...).
    """

    fused: np.ndarray
    y_fused: np.ndarray
    intermediates: Intermediates | None = None
    timesteps: tuple[int, ...] = ()
    tiles: int = 1
    warnings: tuple[str, ...] = ()


def to_unit_float(image: np.ndarray, name: str) -> np.ndarray:
    """uint8 / uint16 / bool / float in [0, 1] -> float32 in [0, 1]; anything else raises ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if image.dtype.kind != "f":
        raise ValueError(f"{name} has dtype {image.dtype}; pass uint8, uint16 or float in [0, 1]")
    if not np.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"{name} is float outside [0, 1] (range {image.min():.3g}..{image.max():.3g}); "
                         "scale it to [0, 1] first")
    return image.astype(np.float32)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, image in (("A", a), ("B", b)):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(f"{name} has shape {image.shape}; expected (H, W) or (H, W, 3)")
        if min(image.shape[:2]) < 2:
            raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]} pixels; both sides must be >= 2")
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"A is {a.shape[1]}x{a.shape[0]} but B is {b.shape[1]}x{b.shape[0]} (width x height); "
                         "register or resample them to the same size first")


@dataclass(frozen=True)
class _Sources:
    """One pair as the network reads it: Y_A (H, W) and B as RGB (H, W, 3), float32 in [0, 1]; ``colour``
    says whether B came in colour (the result is then RGB(Y_F, Cb_B, Cr_B), else gray)."""

    y_a: np.ndarray
    b_rgb: np.ndarray
    colour: bool

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray, where: str = "") -> _Sources:
        """Check and convert a pair (see ``FusionPipeline.fuse``); ``where`` opens any error message."""
        try:
            a, b = to_unit_float(a, "A"), to_unit_float(b, "B")
            _check_pair(a, b)
        except ValueError as error:
            raise ValueError(f"{where}{error}") from None
        y_a = luma(a[..., :3] if a.ndim == 3 and a.shape[2] == 3 else a.reshape(a.shape[:2]))
        b = b.reshape(b.shape[:2]) if b.ndim == 3 and b.shape[2] == 1 else b
        b_rgb = b if b.ndim == 3 else np.repeat(b[..., None], 3, axis=2)
        return cls(y_a.astype(np.float32), b_rgb, b.ndim == 3)

    def result(self, y_fused: np.ndarray, record: Intermediates | None, timesteps: tuple[int, ...], tiles: int,
               warnings: list[str]) -> FusionResult:
        """The FusionResult of fused luminance ``y_fused`` (H, W): the 8-bit image rounded from it."""
        fused = replace_luma(self.b_rgb, y_fused) if self.colour else y_fused
        fused = np.clip(np.rint(fused * 255.0), 0, 255).astype(np.uint8)
        return FusionResult(fused=fused, y_fused=y_fused, intermediates=record, timesteps=timesteps,
                            tiles=tiles, warnings=tuple(warnings))


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering [0, length) with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def _ramp(start: int, end: int, total: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a tile over [start, end): linear ramps of ``overlap`` at interior edges."""
    w = np.ones(end - start, dtype=np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if start > 0:
        w[:overlap] = np.minimum(w[:overlap], ramp)
    if end < total:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


class FusionPipeline:
    """DGD-Fusion inference, numpy in and numpy out: ``fuse(a, b) -> FusionResult``.

    Built around a ``DGDFusionModel`` and the diffusion process that noises its inputs (as a diffusers
    pipeline registers its model and scheduler); it reads arrays, pads, tiles, converts colour and collects
    intermediates. Training calls the model and the process directly, never this class.
    """

    def __init__(self, model: DGDFusionModel, diffusion: GaussianDiffusion | None = None, *, trained: bool = False,
                 tile_size: int = 1024, tile_overlap: int = 64):
        self.model = model
        self.diffusion = diffusion if diffusion is not None else GaussianDiffusion(model.config.diffusion)
        self.diffusion.to(self.device)
        self.trained = trained
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    @property
    def config(self) -> FusionConfig:
        return self.model.config

    @property
    def unet(self) -> DenoisingUNet:
        return self.model.unet

    @property
    def head(self) -> CrossLayerFusionHead:
        return self.model.head

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def stride(self) -> int:
        return self.model.stride

    def to(self, device: str | torch.device) -> FusionPipeline:
        """Move the model and the process to ``device``; returns self."""
        self.model.to(device)
        self.diffusion.to(device)
        return self

    def eval(self) -> FusionPipeline:
        """Put the model in evaluation mode (no dropout); returns self."""
        self.model.eval()
        return self

    @torch.no_grad()
    def fuse(self, a: np.ndarray, b: np.ndarray, *, feature_timesteps: tuple[int, ...] | None = None,
             generator: torch.Generator | None = None, return_intermediates: bool = False,
             on_tile: Callable[[int, int], None] | None = None) -> FusionResult:
        """Fuse a registered pair.

        Args:
            a: source A, (H, W) (an RGB A is reduced to its luma), uint8/uint16 or float in [0, 1].
            b: source B, (H, W) or (H, W, 3), same size as A.
            feature_timesteps: diffusion timesteps whose UNet features the head reads; as many as the
                model was trained with (default: the config's, (5, 50, 100)).
            generator: draws the diffusion noise; default a CPU generator seeded with 0 on every call, so
                the same input always gives the same output.
            return_intermediates: also return expert weights, gate maps, attention maps and the weight map.
            on_tile: called before each tile's pass (one for an untiled input) as on_tile(done, total), the
                tiles fused so far and in all; whatever it raises stops the fusion there (a deadline, a
                progress bar).
        Returns:
            FusionResult; ``fused`` is RGB(Y_F, Cb_B, Cr_B) when B is colour, else gray, uint8, input size.
        """
        source = _Sources.of(a, b)
        timesteps = self._check_timesteps(feature_timesteps)
        if generator is None:
            generator = torch.Generator().manual_seed(DEFAULT_SEED)
        y_fused, record, tiles = self._fuse_planes(source.y_a, source.b_rgb, timesteps, generator,
                                                   return_intermediates, on_tile)
        warnings = self._warnings()
        if return_intermediates and tiles > 1:
            warnings.append(f"intermediate maps are not recorded for inputs fused in {tiles} tiles")
        return source.result(y_fused, record, timesteps, tiles, warnings)

    @torch.no_grad()
    def fuse_batch(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                   feature_timesteps: tuple[int, ...] | None = None,
                   generators: Sequence[torch.Generator] | None = None, batch_size: int = 8) -> list[FusionResult]:
        """Fuse many registered pairs; on CUDA, same-size pairs go through the network ``batch_size`` at a time.

        Each pair gets exactly the noise ``fuse`` gives it: pair i draws its (T, 4, H, W) noise from
        ``generators[i]`` alone, and in a shared pass the draws are interleaved into the UNet's timestep-major
        batch (``_pair_noise``).

        On the CPU each pair has its own pass of the network (``SHARED_PASS_DEVICES``), so every result is
        ``fuse``'s bit for bit, whatever ``batch_size``; CPU kernels are not batch-invariant (docs/design.md §5).
        On CUDA same-size pairs share a pass, for throughput, and a result equals ``fuse``'s to float32 rounding.
        Pairs larger than ``tile_size`` are fused one at a time, in tiles, as ``fuse`` does.

        Args:
            pairs: (a, b) sources as ``fuse`` takes them; any mix of sizes (grouped by size, order kept).
            feature_timesteps: as in ``fuse``, the same for every pair.
            generators: one per pair; default a CPU generator seeded with 0 for each, as ``fuse`` uses.
            batch_size: how many same-size pairs share one pass of the network on CUDA (memory grows with
                it); on the CPU it is only checked.
        Returns:
            One FusionResult per pair, in the order of ``pairs``; no intermediates.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        sources = [_Sources.of(a, b, f"pair {i}: ") for i, (a, b) in enumerate(pairs)]
        timesteps = self._check_timesteps(feature_timesteps)
        if generators is None:
            generators = [torch.Generator().manual_seed(DEFAULT_SEED) for _ in sources]
        if len(generators) != len(sources):
            raise ValueError(f"give one generator per pair: {len(generators)} generators for {len(sources)} pairs")
        results: list[FusionResult | None] = [None] * len(sources)
        for chunk in self._batches([s.y_a.shape for s in sources], batch_size):
            y_a = np.stack([sources[i].y_a for i in chunk])  # (N, H, W)
            b_rgb = np.stack([sources[i].b_rgb for i in chunk])  # (N, H, W, 3)
            if len(chunk) == 1:  # alone: perhaps in tiles
                y, _, tiles = self._fuse_planes(y_a[0], b_rgb[0], timesteps, generators[chunk[0]], False)
                y, tiles = y[None], [tiles]
            else:
                y, _ = self._fuse_stack(y_a, b_rgb, timesteps, [generators[i] for i in chunk], False)
                tiles = [1] * len(chunk)
            for i, y_fused, count in zip(chunk, y, tiles, strict=True):
                results[i] = sources[i].result(y_fused, None, timesteps, count, self._warnings())
        return results

    def _batches(self, sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
        """Indices grouped by image size (first-seen order), cut into chunks of at most ``batch_size``;
        sizes fused in tiles, and every pair outside ``SHARED_PASS_DEVICES``, get chunks of one."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        shared = self.device.type in SHARED_PASS_DEVICES
        chunks = []
        for (height, width), indices in groups.items():
            step = batch_size if shared and max(height, width) <= self.tile_size else 1
            chunks += [indices[i:i + step] for i in range(0, len(indices), step)]
        return chunks

    def _warnings(self) -> list[str]:
        return [] if self.trained else ["the network has random weights (no trained checkpoint loaded)"]

    def _check_timesteps(self, timesteps: tuple[int, ...] | None) -> tuple[int, ...]:
        default = self.config.head.feature_timesteps
        timesteps = default if timesteps is None else tuple(int(t) for t in timesteps)
        if len(timesteps) != len(default):
            raise ValueError(f"this model reads {len(default)} feature timesteps, got {len(timesteps)}: {timesteps}")
        if not all(0 <= t < self.diffusion.num_timesteps for t in timesteps):
            raise ValueError(f"feature timesteps must lie in [0, {self.diffusion.num_timesteps}), got {timesteps}")
        return timesteps

    def _fuse_planes(self, y_a: np.ndarray, b_rgb: np.ndarray, timesteps: tuple[int, ...],
                     generator: torch.Generator, return_intermediates: bool,
                     on_tile: Callable[[int, int], None] | None = None
                     ) -> tuple[np.ndarray, Intermediates | None, int]:
        """Fuse whole, or tile by tile with ramp blending. Returns Y_F (H, W), intermediates, tile count."""
        height, width = y_a.shape
        rows = _tile_starts(height, self.tile_size, self.tile_overlap)
        cols = _tile_starts(width, self.tile_size, self.tile_overlap)
        on_tile = on_tile or (lambda done, total: None)
        if len(rows) == len(cols) == 1:
            on_tile(0, 1)
            y, record = self._fuse_tile(y_a, b_rgb, timesteps, generator, return_intermediates)
            return y, record, 1
        total = np.zeros((height, width), dtype=np.float32)
        weight = np.zeros((height, width), dtype=np.float32)
        corners = [(top, left) for top in rows for left in cols]
        for done, (top, left) in enumerate(corners):
            on_tile(done, len(corners))
            box = np.s_[top:top + self.tile_size, left:left + self.tile_size]
            y, _ = self._fuse_tile(y_a[box], b_rgb[box], timesteps, generator, False)
            w = np.outer(_ramp(top, top + y.shape[0], height, self.tile_overlap),
                         _ramp(left, left + y.shape[1], width, self.tile_overlap))
            total[box] += y * w
            weight[box] += w
        return total / weight, None, len(rows) * len(cols)

    def _fuse_tile(self, y_a: np.ndarray, b_rgb: np.ndarray, timesteps: tuple[int, ...],
                   generator: torch.Generator, return_intermediates: bool
                   ) -> tuple[np.ndarray, Intermediates | None]:
        """One pair, one forward pass: Y_A (h, w), B (h, w, 3) in [0, 1] -> Y_F (h, w) and intermediates."""
        y, record = self._fuse_stack(y_a[None], b_rgb[None], timesteps, [generator], return_intermediates)
        return y[0], record

    def _fuse_stack(self, y_a: np.ndarray, b_rgb: np.ndarray, timesteps: tuple[int, ...],
                    generators: Sequence[torch.Generator], return_intermediates: bool
                    ) -> tuple[np.ndarray, Intermediates | None]:
        """N same-size pairs, one forward pass: Y_A (N, h, w), B (N, h, w, 3) in [0, 1] -> Y_F (N, h, w) and
        the first pair's intermediates; pair i's noise comes from ``generators[i]``."""
        device = self.device
        a = torch.from_numpy(np.ascontiguousarray(y_a))[:, None].to(device)  # (N, 1, h, w)
        b = torch.from_numpy(np.ascontiguousarray(b_rgb.astype(np.float32))).permute(0, 3, 1, 2).to(device)
        y_b = torch.from_numpy(luma(b_rgb).astype(np.float32))[:, None].to(device)  # (N, 1, h, w)
        padded, size = pad_to_multiple(torch.cat([a, b, y_b], dim=1), self.stride)  # (N, 5, H, W)
        a, b, y_b = padded[:, :1], padded[:, 1:4], padded[:, 4:]
        x0 = torch.cat([a, b], dim=1) * 2 - 1  # (N, 4, H, W) in [-1, 1]
        noise = _pair_noise(generators, len(timesteps), tuple(x0.shape[1:]))
        out = self.model(a, y_b, x0, timesteps, self.diffusion, noise, return_intermediates)
        y = crop_back(out.y_fused, size)[:, 0].float().cpu().numpy()  # (N, h, w)
        if out.unet is None:
            return y, None
        return y, _collect(out.unet, out.head, size, tuple(padded.shape[-2:]))


def _pair_noise(generators: Sequence[torch.Generator], num_t: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Each pair's noise (T, *shape) from its own generator, interleaved timestep-major: (T * N, *shape).

    A generator draws exactly what it draws for that pair alone, so batching keeps the noise.
    """
    noise = [torch.randn((num_t, *shape), generator=g, device=g.device) for g in generators]
    return rearrange(torch.stack(noise), "n t ... -> (t n) ...")


def _collect(unet: UNetIntermediates, head: FusionHeadOutput, size: tuple[int, int], padded: tuple[int, int]
             ) -> Intermediates:
    """The maps of the first pair of the batch as numpy, spatial maps cropped to the unpadded ``size``.

    The UNet's maps come timestep-major, (T * B, ...), so the first pair's are every B-th row: (T, ...).
    """
    batch = head.y_fused.shape[0]
    weight = head.weight_map
    return Intermediates(
        experts={layer: _numpy(alpha[::batch]) for layer, alpha in unet.experts.items()},  # (T, M)
        gates={layer: _crop(g[::batch, 0], size, padded) for layer, g in unet.gates.items()},  # (T, h, w)
        gate_activity={layer: _numpy(v[::batch]) for layer, v in unet.gate_activity.items()},  # (T, 4)
        attention={stage: _crop(m[0, 0], size, padded) for stage, m in head.attention.items()},  # (h, w)
        weight_map=None if weight is None else _crop(weight[0, 0], size, padded))  # (H, W)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().numpy()


def _crop(x: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """A map (..., h, w) of the padded input cut to the part that covers the unpadded ``size``, as numpy."""
    h = math.ceil(x.shape[-2] * size[0] / padded[0])
    w = math.ceil(x.shape[-1] * size[1] / padded[1])
    return _numpy(x[..., :h, :w])


def build_pipeline(config: FusionConfig, generator: torch.Generator | None = None) -> FusionPipeline:
    """A pipeline with freshly initialised (untrained) weights (``models.build_model``), in eval mode.

    Args:
        generator: a CPU generator every initial weight is drawn from (None: torch's global generator).
    """
    return FusionPipeline(build_model(config, generator))

"""Classical fusion baselines for the comparison tables: pixel average, pixel maximum, Laplacian pyramid, GFF.

The network is compared with these on the same pairs and the same metrics (`evaluate.py`). References:
- Laplacian pyramid: P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code",
  IEEE Trans. Commun. 31(4), 1983 (5-tap binomial kernel); fusion rule as in Burt & Kolczynski, ICCV 1993:
  the detail coefficient of larger magnitude, the averaged base.
- GFF: S. Li, X. Kang and J. Hu, "Image fusion with guided filtering", IEEE TIP 22(7), 2013,
  DOI 10.1109/TIP.2013.2244222, with its parameters (r1 = 45, eps1 = 0.3, r2 = 7, eps2 = 1e-6); the guided
  filter of K. He, J. Sun and X. Tang, IEEE TPAMI 35(6), 2013.

Colour is handled as the network handles it (docs/design.md §1, `fuse_luminance`): fuse Y_A with Y_B, output
YCbCr -> RGB(Y_F, Cb_B, Cr_B) clipped to [0, 1]; a gray B gives a gray result. Every method takes a (gray
(H, W); an RGB A is reduced to its luma) and b ((H, W) or (H, W, 3)), floats in [0, 1] or uint8, any size,
and returns float64 in [0, 1] with B's shape. numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .color import luma, rgb_to_ycbcr, ycbcr_to_rgb

LuminanceRule = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (Y_A, Y_B) (H, W) -> Y_F (H, W)

# Burt & Adelson's generating kernel with a = 0.375 (the binomial 1 4 6 4 1).
_BINOMIAL_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


# ---------------------------------------------------------------------------------------------- input checks


def _as_unit_image(image: np.ndarray, name: str) -> np.ndarray:
    """Validate an image and return it as float64 in [0, 1], shape (H, W) or (H, W, 3)."""
    x = np.asarray(image)
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3)):
        raise ValueError(f"{name} must be a gray (H, W) or RGB (H, W, 3) image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"{name} has values in [{low:.4g}, {high:.4g}]; float images must lie in [0, 1]")
    return np.clip(x.astype(np.float64), 0.0, 1.0)


def fuse_luminance(rule: LuminanceRule, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Apply a luminance fusion rule with the product's colour handling (docs/design.md §1).

    Args:
        rule: (Y_A, Y_B) -> Y_F on (H, W) float64 in [0, 1].
        a: source A, (H, W) (an (H, W, 3) A is reduced to its BT.601 luma).
        b: source B, (H, W) or (H, W, 3) RGB.
    Returns:
        Fused image, float64 in [0, 1], B's shape: gray Y_F for a gray B, else RGB(Y_F, Cb_B, Cr_B).
    """
    y_a = luma(_as_unit_image(a, "a"))
    b = _as_unit_image(b, "b")
    if y_a.shape != b.shape[:2]:
        raise ValueError(f"a and b must have the same height and width; got a {y_a.shape}, b {b.shape[:2]}")
    if b.ndim == 2:
        return np.clip(rule(y_a, b), 0.0, 1.0)
    ycbcr = rgb_to_ycbcr(b)  # (H, W, 3)
    ycbcr[..., 0] = rule(y_a, ycbcr[..., 0])
    return np.clip(ycbcr_to_rgb(ycbcr), 0.0, 1.0)


# ------------------------------------------------------------------------------------------ luminance rules


def average_rule(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """Y_F = (Y_A + Y_B) / 2."""
    return (y_a + y_b) / 2


def maximum_rule(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """Y_F = max(Y_A, Y_B) per pixel."""
    return np.maximum(y_a, y_b)


def _pyramid_depth(shape: tuple[int, int], levels: int, min_side: int = 8) -> int:
    """Number of reductions (<= levels) that keep the coarsest level at least min_side pixels on each side."""
    depth, side = 0, min(shape)
    while depth < levels and (side + 1) // 2 >= min_side:
        depth, side = depth + 1, (side + 1) // 2
    return depth


def _blur(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Separable 5-tap binomial filter (times gain per axis), mirror borders."""
    taps = _BINOMIAL_TAPS * gain
    return ndimage.correlate1d(ndimage.correlate1d(x, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")


def _expand(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample a coarser level to shape: zeros between samples, then the binomial filter times 2 per axis."""
    up = np.zeros(shape)
    up[::2, ::2] = x  # (ceil(H / 2), ceil(W / 2)) fits exactly, odd sides included
    return _blur(up, gain=2.0)


def laplacian_pyramid(image: np.ndarray, depth: int) -> list[np.ndarray]:
    """Laplacian pyramid [L_0, ..., L_{depth-1}, G_depth]: band-pass details, then the low-pass base."""
    pyramid, current = [], image
    for _ in range(depth):
        coarser = _blur(current)[::2, ::2]
        pyramid.append(current - _expand(coarser, current.shape))
        current = coarser
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Inverse of `laplacian_pyramid` (exact up to float rounding)."""
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + _expand(image, detail.shape)
    return image


def laplacian_rule(y_a: np.ndarray, y_b: np.ndarray, *, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion: per level the detail of larger magnitude (A on ties), the base averaged.

    levels is the number of detail levels; fewer are used when the coarsest level would drop below 8 pixels
    (a tiny image is then simply averaged).
    """
    depth = _pyramid_depth(y_a.shape, levels)
    pyramid_a, pyramid_b = laplacian_pyramid(y_a, depth), laplacian_pyramid(y_b, depth)
    fused = [np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(pyramid_a[:-1], pyramid_b[:-1], strict=True)]
    fused.append((pyramid_a[-1] + pyramid_b[-1]) / 2)
    return collapse_pyramid(fused)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: q = mean(a) I + mean(b), a = cov(I, p) / (var(I) + eps), b = mean(p) - a mean(I).

    Box means over (2 radius + 1)^2 windows with reflected borders (He's reference normalises by the number of
    pixels inside the image instead; the two differ only within radius of the border).
    """
    size = 2 * radius + 1
    mean_i = ndimage.uniform_filter(guide, size, mode="reflect")
    mean_p = ndimage.uniform_filter(src, size, mode="reflect")
    var_i = ndimage.uniform_filter(guide * guide, size, mode="reflect") - mean_i * mean_i
    cov_ip = ndimage.uniform_filter(guide * src, size, mode="reflect") - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return ndimage.uniform_filter(a, size, mode="reflect") * guide + ndimage.uniform_filter(b, size, mode="reflect")


def _normalised_pair(w_a: np.ndarray, w_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights clipped at 0 and scaled to sum to 1 per pixel (0.5 each where both are 0)."""
    w_a, w_b = np.maximum(w_a, 0.0), np.maximum(w_b, 0.0)
    total = w_a + w_b
    share_a = np.divide(w_a, total, out=np.full_like(total, 0.5), where=total > 1e-12)
    return share_a, 1 - share_a


def guided_filter_rule(
    y_a: np.ndarray,
    y_b: np.ndarray,
    *,
    base_radius: int = 45,
    base_eps: float = 0.3,
    detail_radius: int = 7,
    detail_eps: float = 1e-6,
) -> np.ndarray:
    """GFF (Li, Kang, Hu 2013): two-scale decomposition, saliency weights refined by guided filtering.

    1. base = 31x31 mean of Y, detail = Y - base;
    2. saliency S = Gaussian(r = 5, sigma = 5) of |3x3 Laplacian of Y|; P_X = 1 where S_X is the larger
       (both 1 on ties, so identical inputs are returned unchanged);
    3. W_base = guided_filter(Y_X, P_X, 45, 0.3), W_detail = guided_filter(Y_X, P_X, 7, 1e-6), normalised;
    4. Y_F = sum_X W_base,X base_X + W_detail,X detail_X.
    """
    bases = [ndimage.uniform_filter(y, 31, mode="reflect") for y in (y_a, y_b)]
    details = [y - base for y, base in zip((y_a, y_b), bases, strict=True)]
    saliency = [
        ndimage.gaussian_filter(np.abs(ndimage.laplace(y, mode="reflect")), sigma=5.0, truncate=1.0, mode="reflect")
        for y in (y_a, y_b)
    ]
    masks = [(saliency[0] >= saliency[1]).astype(np.float64), (saliency[1] >= saliency[0]).astype(np.float64)]
    guides = list(zip((y_a, y_b), masks, strict=True))  # (Y_X, P_X) per source
    w_base = _normalised_pair(*(guided_filter(y, p, base_radius, base_eps) for y, p in guides))
    w_detail = _normalised_pair(*(guided_filter(y, p, detail_radius, detail_eps) for y, p in guides))
    return sum(wb * base + wd * detail for wb, base, wd, detail in zip(w_base, bases, w_detail, details, strict=True))


# -------------------------------------------------------------------------------------------- the methods


def fuse_average(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel average of the luminances (B's chroma kept)."""
    return fuse_luminance(average_rule, a, b)


def fuse_maximum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel maximum of the luminances (B's chroma kept)."""
    return fuse_luminance(maximum_rule, a, b)


def fuse_laplacian(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Laplacian-pyramid fusion of the luminances, 4 levels (B's chroma kept)."""
    return fuse_luminance(laplacian_rule, a, b)


def fuse_guided_filter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guided-filter fusion (GFF) of the luminances with the paper's parameters (B's chroma kept)."""
    return fuse_luminance(guided_filter_rule, a, b)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": fuse_average,
    "max": fuse_maximum,
    "laplacian": fuse_laplacian,
    "guided_filter": fuse_guided_filter,
}

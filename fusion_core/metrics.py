"""Objective fusion metrics: the paper's seven (EN, MI, SSIM, PSNR, SF, Q^AB/F, CC) plus SD, AG, SCD and VIF.

Paper: "Dynamic gating diffusion denoising and cross-layer attention-based multimodal image fusion network",
J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, section 2.1.3. Conventions fixed in docs/design.md §4.

F is the fused image, A and B the two sources. Every function takes uint8 or float arrays on the 0..255 scale
(floats are read as 0..255, not 0..1), gray (H, W) or RGB (H, W, 3). RGB images are scored on their BT.601
luma (`color.luma`). All arithmetic is float64. Histogram metrics (EN, MI) round the values to the 256 integer
levels 0..255. Bad input (empty, NaN or inf, wrong dimensions, values outside 0..255, F, A and B of different
sizes) raises ValueError naming the problem.

Two convention sets (`CONVENTIONS`):

- "standard" (docs/design.md §4): MI in bits; SSIM = (SSIM(F,A) + SSIM(F,B)) / 2 with data range 255; PSNR with
  peak 255; Q^AB/F with reflected borders and orientations compared modulo pi.
- "published": what the `utils/Evaluator.py` script of CDDFuse (Zhao et al., CVPR 2023) computes, which many
  later fusion papers reuse for their tables. Use it to compare with numbers from those papers:
  MI in nats (scikit-learn's `mutual_info_score`); SSIM summed, SSIM(F,A) + SSIM(F,B), with data range 2
  (the script passes no data_range, and scikit-image before 0.20 assumed 2 for float input; on 0..255 data
  this makes C1 and C2 negligible and gives about 1.0 where range 255 gives 1.4); PSNR with peak max(F);
  Q^AB/F as the script (and the MATLAB Qabf.m it was ported from) computes it: zero padding, unwrapped
  orientations (`qabf`, toolbox_compatible=True), which moves MSRS means by up to about 0.03.

EN, SF, SD, AG, CC, SCD and VIF are the same in both sets (and the same as that script's).

Every metric here is higher-is-better (`HIGHER_IS_BETTER`). Note that EN, SF, SD and AG also reward noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .color import luma
from .config import CONVENTIONS as CONVENTIONS  # re-exported: the metrics and their conventions
from .config import METRIC_DATA_RANGE, Convention, get_convention

# Q^AB/F constants (Xydeas & Petrovic 2000; docs/design.md §4).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8

# SSIM: scikit-image's defaults (uniform 7x7 window, sample covariance); 0..255 data have range 255.
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03

# VIF (pixel domain, Sheikh & Bovik 2006): noise variance of the HVS model on 0..255 data, and the scales.
VIF_NOISE_VAR, VIF_EPS, VIF_SCALES = 2.0, 1e-10, 4
VIF_MIN_SIDE = 2 ** VIF_SCALES + 1  # the 17x17 window of the first scale must fit ('valid' filtering)


# ----------------------------------------------------------------------------------------------- input checks


def _as_luma(image: np.ndarray, name: str, min_side: int = 1) -> np.ndarray:
    """Validate one image and return its (H, W) float64 luma on 0..255 (a new array, never a view)."""
    x = np.asarray(image)
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); give an image with at least one pixel")
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3)):
        hint = " (drop the alpha channel)" if x.ndim == 3 and x.shape[-1] == 4 else ""
        raise ValueError(f"{name} must be a gray (H, W) or RGB (H, W, 3) image, got shape {x.shape}{hint}")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer or float pixel values, got dtype {x.dtype}")
    if x.dtype != np.uint8:
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < -1e-6 or high > 255 + 1e-6:
            raise ValueError(
                f"{name} has values in [{low:.4g}, {high:.4g}], but metrics expect the 0..255 scale "
                "(uint8, or floats on the same scale: multiply images in [0, 1] by 255)"
            )
    y = luma(x)  # (H, W) float64, a copy
    np.clip(y, 0.0, 255.0, out=y)  # float rounding may overshoot 255 by an ulp
    if min(y.shape) < min_side:
        height, width = y.shape
        raise ValueError(f"{name} is {height}x{width}; this metric needs at least {min_side}x{min_side} pixels")
    return y


def _as_luma_triple(fused, a, b, min_side: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate F, A, B and check they have the same height and width (channels may differ: luma is used)."""
    f, a, b = (_as_luma(x, name, min_side) for x, name in ((fused, "fused"), (a, "a"), (b, "b")))
    if not f.shape == a.shape == b.shape:
        raise ValueError(
            f"fused, a and b must have the same height and width; got fused {f.shape}, a {a.shape}, b {b.shape}"
        )
    return f, a, b


# ---------------------------------------------------------------------------------------------- small helpers


def _levels(x: np.ndarray) -> np.ndarray:
    """0..255 float -> nearest integer level (intp), for histograms."""
    return np.rint(x).astype(np.intp)


def _entropy_of_counts(counts: np.ndarray, log_base: float) -> float:
    """Shannon entropy of a histogram given as counts: -sum p log p, in units of log_base."""
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float((np.log(total) - (counts * np.log(counts)).sum() / total) / np.log(log_base))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either image is constant (no linear relation can be measured)."""
    xc, yc = x - x.mean(), y - y.mean()
    denominator = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denominator) if denominator > 0 else 0.0


# ------------------------------------------------------------------------------------ no-reference metrics


def entropy(image: np.ndarray) -> float:
    """EN: Shannon entropy of the 256-bin histogram of the image, in bits.

    EN = -sum_l p_l log2 p_l, p_l the fraction of pixels at level l (values rounded to 0..255).
    A constant image has EN 0; an image with two equally frequent levels has EN 1. Same in both conventions.
    """
    return _entropy(_as_luma(image, "image"))


def _entropy(f: np.ndarray) -> float:
    return _entropy_of_counts(np.bincount(_levels(f).ravel(), minlength=256), 2.0)


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation of the image, sqrt(mean((F - mean F)^2)), in gray levels."""
    return float(_as_luma(image, "image").std())


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) (Eskicioglu & Fisher 1995), in gray levels.

    RF (row frequency) is the RMS of the horizontal first differences F(i, j) - F(i, j-1), averaged over the
    H (W - 1) differences; CF likewise for the vertical differences. A constant image has SF 0.
    """
    return _spatial_frequency(_as_luma(image, "image", min_side=2))


def _spatial_frequency(f: np.ndarray) -> float:
    rf_sq = np.mean(np.diff(f, axis=1) ** 2)
    cf_sq = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(rf_sq + cf_sq))


def average_gradient(image: np.ndarray) -> float:
    """AG = mean over all pixels of sqrt((Gx^2 + Gy^2) / 2), in gray levels per pixel.

    Gx, Gy are central differences, one-sided at the borders (numpy.gradient, as MATLAB's `gradient` used by
    the usual toolboxes). A ramp F(i, j) = c j has AG = c / sqrt(2).
    """
    return _average_gradient(_as_luma(image, "image", min_side=2))


def _average_gradient(f: np.ndarray) -> float:
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2)))


# ------------------------------------------------------------------------------------- two-source metrics


def mutual_information(fused: np.ndarray, a: np.ndarray, b: np.ndarray, *, log_base: float = 2.0) -> float:
    """MI = MI(F, A) + MI(F, B), summed over the two sources; bits for log_base 2 (standard), nats for e.

    MI(F, X) = sum_{f,x} p(f, x) log(p(f, x) / (p(f) p(x))) = H(F) + H(X) - H(F, X), from the 256x256 joint
    histogram of the rounded levels. MI(F, F) = H(F).
    """
    return _mutual_information(*_as_luma_triple(fused, a, b), log_base)


def _mutual_information(f: np.ndarray, a: np.ndarray, b: np.ndarray, log_base: float) -> float:
    f_levels = _levels(f).ravel()
    total = 0.0
    for x in (a, b):
        joint = np.bincount(f_levels * 256 + _levels(x).ravel(), minlength=256 * 256).reshape(256, 256)
        h_f = _entropy_of_counts(joint.sum(axis=1), log_base)
        h_x = _entropy_of_counts(joint.sum(axis=0), log_base)
        total += max(h_f + h_x - _entropy_of_counts(joint.ravel(), log_base), 0.0)  # >= 0 up to rounding
    return total


def _ssim_with(f: np.ndarray, sources: tuple[np.ndarray, ...], data_range: float) -> list[float]:
    """Mean SSIM of f against each source, sharing f's local statistics (inputs already validated luma)."""
    size = SSIM_WINDOW
    cov_norm = size * size / (size * size - 1)  # sample covariance, as scikit-image's use_sample_covariance
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_f = ndimage.uniform_filter(f, size)
    var_f = cov_norm * (ndimage.uniform_filter(f * f, size) - mu_f * mu_f)
    pad = (size - 1) // 2  # scikit-image averages the map without the border a window cannot cover
    scores = []
    for x in sources:
        mu_x = ndimage.uniform_filter(x, size)
        var_x = cov_norm * (ndimage.uniform_filter(x * x, size) - mu_x * mu_x)
        cov = cov_norm * (ndimage.uniform_filter(f * x, size) - mu_f * mu_x)
        ssim_map = ((2 * mu_f * mu_x + c1) * (2 * cov + c2)) / ((mu_f**2 + mu_x**2 + c1) * (var_f + var_x + c2))
        scores.append(float(ssim_map[pad:-pad, pad:-pad].mean()))
    return scores


def ssim(x: np.ndarray, y: np.ndarray, *, data_range: float = METRIC_DATA_RANGE) -> float:
    """SSIM of one pair (Wang et al. 2004), equal to scikit-image's `structural_similarity` defaults.

    Uniform 7x7 window, K1 = 0.01, K2 = 0.03, C = (K data_range)^2 with data range 255 for 0..255 images,
    sample covariance (N / (N - 1)), reflect padding, and the mean of the SSIM map without the 3-pixel border.
    SSIM(X, X) = 1; the value is symmetric in x and y.
    """
    fx, fy = _as_luma(x, "x", SSIM_WINDOW), _as_luma(y, "y", SSIM_WINDOW)
    if fx.shape != fy.shape:
        raise ValueError(f"x and y must have the same height and width; got {fx.shape} and {fy.shape}")
    return _ssim_with(fx, (fy,), data_range)[0]


def ssim_fusion(
    fused: np.ndarray, a: np.ndarray, b: np.ndarray, *, reduction: str = "mean", data_range: float = METRIC_DATA_RANGE
) -> float:
    """SSIM of F with both sources: (SSIM(F,A) + SSIM(F,B)) / 2 for "mean" (standard), their sum for "sum".

    Each term is `ssim` (7x7 uniform window, data range 255 by default). The mean is on the scale of the
    paper's tables (about 0.6 to 0.75); "sum" with data_range 2 is the published Evaluator's (up to 2).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return _ssim_fusion(*_as_luma_triple(fused, a, b, SSIM_WINDOW), reduction, data_range)


def _ssim_fusion(f: np.ndarray, a: np.ndarray, b: np.ndarray, reduction: str, data_range: float) -> float:
    total = sum(_ssim_with(f, (a, b), data_range))
    return total / 2 if reduction == "mean" else total


def psnr(fused: np.ndarray, a: np.ndarray, b: np.ndarray, *, peak: float | None = 255.0) -> float:
    """PSNR = 10 log10(peak^2 / MSE) in dB, MSE = (MSE(F,A) + MSE(F,B)) / 2 on the 0..255 scale.

    peak is 255 in the standard convention; None takes max(F), as the published Evaluator does. F equal to
    both sources gives +inf.
    """
    return _psnr(*_as_luma_triple(fused, a, b), peak)


def _psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray, peak: float | None) -> float:
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2
    peak_value = float(f.max()) if peak is None else float(peak)
    if mse == 0:
        return float("inf")
    if peak_value == 0:
        return float("-inf")
    return float(10 * np.log10(peak_value**2 / mse))


def correlation_coefficient(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """CC = (r(F,A) + r(F,B)) / 2, r the Pearson correlation (0 for a constant image). Range [-1, 1].

    Invariant to F -> s F + t for s > 0; CC(F, F, F) = 1.
    """
    return _correlation_coefficient(*_as_luma_triple(fused, a, b))


def _correlation_coefficient(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return (_pearson(f, a) + _pearson(f, b)) / 2


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD, the sum of the correlations of differences (Aslantas & Bendes 2015): r(F - B, A) + r(F - A, B).

    F - B estimates what F took from A (and F - A what it took from B). Range [-2, 2]; r is Pearson (0 for a
    constant image). Symmetric in A and B.
    """
    return _scd(*_as_luma_triple(fused, a, b))


def _scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _pearson(f - b, a) + _pearson(f - a, b)


def _sobel(x: np.ndarray, toolbox_compatible: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength g = sqrt(sx^2 + sy^2) and orientation alpha of every pixel.

    Standard: reflected borders, alpha = atan2(sy, sx). Toolbox: zero padding and Qabf.m's atan(SAy / SAx),
    where SAx = -sx because the script convolves (flipping the kernel), and alpha = pi/2 where SAx = 0.
    """
    mode = "constant" if toolbox_compatible else "reflect"
    sx, sy = ndimage.sobel(x, axis=1, mode=mode), ndimage.sobel(x, axis=0, mode=mode)
    if not toolbox_compatible:
        return np.hypot(sx, sy), np.arctan2(sy, sx)
    alpha = np.full_like(x, np.pi / 2)
    np.arctan(np.divide(sy, -sx, out=np.zeros_like(x), where=sx != 0), out=alpha, where=sx != 0)
    return np.hypot(sx, sy), alpha


def _edge_preservation(
    g_x: np.ndarray, alpha_x: np.ndarray, g_f: np.ndarray, alpha_f: np.ndarray, toolbox_compatible: bool
) -> np.ndarray:
    """Q^XF per pixel: the sigmoids of relative edge strength G and relative orientation A, multiplied."""
    ratio_fx = np.divide(g_f, g_x, out=np.zeros_like(g_x), where=g_x > g_f)  # g_x > g_f >= 0
    ratio_xf = np.divide(g_x, g_f, out=np.zeros_like(g_x), where=g_x < g_f)
    if toolbox_compatible:  # Qabf.m takes G = g_F (not 1) where g_X = g_F, and A without wrapping
        strength = np.where(g_x == g_f, g_f, ratio_fx + ratio_xf)
        orientation = 1 - np.abs(alpha_x - alpha_f) / (np.pi / 2)
    else:  # G = min / max (1 where equal, 0 where both are 0); orientations are lines, compared modulo pi
        strength = np.where((g_x == g_f) & (g_x > 0), 1.0, ratio_fx + ratio_xf)
        d = np.abs(alpha_x - alpha_f) % np.pi
        orientation = 1 - np.minimum(d, np.pi - d) / (np.pi / 2)
    q_g = QABF_TG / (1 + np.exp(QABF_KG * (strength - QABF_DG)))
    q_a = QABF_TA / (1 + np.exp(QABF_KA * (orientation - QABF_DA)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray, *, toolbox_compatible: bool = False) -> float:
    """Q^AB/F, the edge preservation of Xydeas & Petrovic (Electronics Letters 36(4), 2000). Range [0, 1).

    Sobel gradients give each pixel an edge strength g and orientation alpha. For a source X:
    G^XF = min(g_X, g_F) / max(g_X, g_F) (0 where both are 0), A^XF = 1 - d / (pi/2) with d the angle between
    alpha_X and alpha_F modulo pi, and Q^XF = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da))),
    with Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8. Then
    Q^AB/F = sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B) (weights g^L with L = 1).

    Choices (standard): borders are reflected, so the image frame is not an edge; orientations wrap modulo pi.
    toolbox_compatible=True reproduces the widely used MATLAB Qabf.m and its Python port in CDDFuse's
    Evaluator ("published" convention): zero padding (the frame counts as an edge), G = g_F where
    g_X = g_F, and the unwrapped A = 1 - |alpha_X - alpha_F| / (pi/2), which punishes near-horizontal
    edges whose angle flips between +pi/2 and -pi/2 (A then drops to about -1).
    A copy of an edge image (F = A = B) scores Tg / (1 + exp(kg / 2)) * Ta / (1 + exp(0.2 ka)) = 0.9748,
    not 1. Sources without any edge give 0 / 0, taken as 1 (nothing to preserve). Needs at least 3x3 pixels.
    """
    return _qabf(*_as_luma_triple(fused, a, b, min_side=3), toolbox_compatible)


def _qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray, toolbox_compatible: bool) -> float:
    g_f, alpha_f = _sobel(f, toolbox_compatible)
    numerator, denominator = 0.0, 0.0
    for x in (a, b):
        g_x, alpha_x = _sobel(x, toolbox_compatible)
        q_xf = _edge_preservation(g_x, alpha_x, g_f, alpha_f, toolbox_compatible)
        numerator += float((q_xf * g_x).sum())
        denominator += float(g_x.sum())
    return numerator / denominator if denominator > 0 else 1.0


# ------------------------------------------------------------------------------------------------------ VIF


def _vif_window(scale: int) -> int:
    """Side of the Gaussian window of VIFP at scale 1..4: 17, 9, 5, 3."""
    return 2 ** (VIF_SCALES + 1 - scale) + 1


def _gaussian_taps(size: int) -> np.ndarray:
    """1-D taps of the normalised size x size Gaussian window of VIFP (sigma = size / 5); separable."""
    offsets = np.arange(size) - (size - 1) / 2
    taps = np.exp(-(offsets**2) / (2 * (size / 5) ** 2))
    return taps / taps.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering keeping only the 'valid' part (no padding): (H, W) -> (H - K + 1, W - K + 1)."""
    half = (len(taps) - 1) // 2
    h = ndimage.correlate1d(x, taps, axis=0, mode="constant")[half : x.shape[0] - half]
    return ndimage.correlate1d(h, taps, axis=1, mode="constant")[:, half : x.shape[1] - half]


def _vif_terms(ref: np.ndarray, dist: np.ndarray, taps: np.ndarray) -> tuple[float, float]:
    """One scale of VIFP: (information of ref kept in dist, information in ref), summed over local windows."""
    mu_r, mu_d = _filter_valid(ref, taps), _filter_valid(dist, taps)
    var_r = np.maximum(_filter_valid(ref * ref, taps) - mu_r * mu_r, 0.0)
    var_d = np.maximum(_filter_valid(dist * dist, taps) - mu_d * mu_d, 0.0)
    cov = _filter_valid(ref * dist, taps) - mu_r * mu_d
    # Distortion channel dist = gain * ref + v, v of variance sv_sq; degenerate windows as Sheikh's reference.
    gain = cov / (var_r + VIF_EPS)
    sv_sq = var_d - gain * cov
    flat_ref = var_r < VIF_EPS
    gain[flat_ref], sv_sq[flat_ref], var_r[flat_ref] = 0.0, var_d[flat_ref], 0.0
    flat_dist = var_d < VIF_EPS
    gain[flat_dist], sv_sq[flat_dist] = 0.0, 0.0
    negative = gain < 0
    sv_sq[negative], gain[negative] = var_d[negative], 0.0
    sv_sq = np.maximum(sv_sq, VIF_EPS)
    kept = np.log1p(gain * gain * var_r / (sv_sq + VIF_NOISE_VAR)).sum()
    present = np.log1p(var_r / VIF_NOISE_VAR).sum()
    return float(kept), float(present)


def _vif_pyramid(x: np.ndarray) -> list[np.ndarray]:
    """The images VIFP works on (up to VIF_SCALES): x, then repeatedly Gaussian-filtered ('valid'), decimated by 2."""
    levels = [x]
    for scale in range(2, VIF_SCALES + 1):  # each scale low-passes with its own window before decimating
        if min(levels[-1].shape) < _vif_window(scale):
            break  # small image: no coarser scale
        levels.append(_filter_valid(levels[-1], _gaussian_taps(_vif_window(scale)))[::2, ::2])
    return levels


def _vif_single(ref_levels: list[np.ndarray], dist_levels: list[np.ndarray]) -> float:
    """VIFP(ref -> dist) from the two pyramids: sum of kept information / sum of present information."""
    kept, present = 0.0, 0.0
    for scale, (ref, dist) in enumerate(zip(ref_levels, dist_levels, strict=True), start=1):
        size = _vif_window(scale)
        if min(ref.shape) < size:
            continue  # the window no longer fits at this scale (small images): the scale has no windows
        scale_kept, scale_present = _vif_terms(ref, dist, _gaussian_taps(size))
        kept, present = kept + scale_kept, present + scale_present
    return kept / present if present > 0 else 1.0


def vif(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF = VIFP(A -> F) + VIFP(B -> F), summed over the sources as fusion toolboxes report it.

    VIFP is the multi-scale pixel-domain visual information fidelity of Sheikh & Bovik (IEEE TIP 15(2), 2006):
    at 4 scales, Gaussian windows of size N = 17, 9, 5, 3 (sigma N / 5, 'valid' filtering, decimation by 2
    between scales), a gain-plus-noise model F = g X + v in each window and HVS noise variance 2; VIFP =
    sum log(1 + g^2 var_X / (var_v + 2)) / sum log(1 + var_X / 2). VIFP(X -> X) = 1 and it can exceed 1 when
    F enhances contrast; a constant source gives 0 / 0, taken as 1. Needs at least 17x17 pixels.
    This is the VIF of the published Evaluator too (there named VIFF; not Han et al.'s VIFF of 2013).
    """
    return _vif(*_as_luma_triple(fused, a, b, VIF_MIN_SIDE))


def _vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    f_levels = _vif_pyramid(f)
    return _vif_single(_vif_pyramid(a), f_levels) + _vif_single(_vif_pyramid(b), f_levels)


# ------------------------------------------------------------------------------------------------- table


MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Convention], float]

# label -> fn(fused, a, b, convention) on validated float64 luma (as ``compute_metrics`` passes them).
_UNCHECKED: dict[str, MetricFn] = {
    "EN": lambda f, a, b, c: _entropy(f),
    "MI": lambda f, a, b, c: _mutual_information(f, a, b, c.mi_log_base),
    "SSIM": lambda f, a, b, c: _ssim_fusion(f, a, b, c.ssim_reduction, c.ssim_data_range),
    "PSNR": lambda f, a, b, c: _psnr(f, a, b, c.psnr_peak),
    "SF": lambda f, a, b, c: _spatial_frequency(f),
    "Qabf": lambda f, a, b, c: _qabf(f, a, b, c.qabf_toolbox_compatible),
    "CC": lambda f, a, b, c: _correlation_coefficient(f, a, b),
    "SD": lambda f, a, b, c: float(f.std()),
    "AG": lambda f, a, b, c: _average_gradient(f),
    "SCD": lambda f, a, b, c: _scd(f, a, b),
    "VIF": lambda f, a, b, c: _vif(f, a, b),
}
# The smallest side each metric needs (1 where not listed).
MIN_SIDE: dict[str, int] = {"SSIM": SSIM_WINDOW, "SF": 2, "Qabf": 3, "AG": 2, "VIF": VIF_MIN_SIDE}


def _checked(label: str) -> MetricFn:
    """The metric ``label`` on any images ``compute_metrics`` accepts: validated, then computed."""
    def metric(fused: np.ndarray, a: np.ndarray, b: np.ndarray, convention: Convention) -> float:
        return _UNCHECKED[label](*_as_luma_triple(fused, a, b, MIN_SIDE.get(label, 1)), convention)
    return metric


# label -> fn(fused, a, b, convention) on any images. Labels are the paper's; the first seven are the paper's.
METRICS: dict[str, MetricFn] = {label: _checked(label) for label in _UNCHECKED}
PAPER_METRICS: tuple[str, ...] = ("EN", "MI", "SSIM", "PSNR", "SF", "Qabf", "CC")
# All eleven grow with quality (more information, similarity, sharpness or fidelity).
HIGHER_IS_BETTER: dict[str, bool] = {label: True for label in METRICS}


@dataclass(frozen=True)
class MetricsReport:
    """The metric values of one fused image, keyed by the paper labels, and the convention used."""

    values: dict[str, float]
    convention: str


def compute_metrics(
    fused: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    convention: str = "standard",
    metrics: tuple[str, ...] | None = None,
) -> MetricsReport:
    """Score a fused image against its two sources.

    Args:
        fused, a, b: uint8 or float images on the 0..255 scale, gray (H, W) or RGB (H, W, 3) (scored on
            BT.601 luma); same H and W, at least 17x17 for VIF.
        convention: "standard" or "published" (see `CONVENTIONS`).
        metrics: labels to compute (default: all of `METRICS`, in that order).
    Returns:
        MetricsReport with values[label] -> float.
    """
    chosen = get_convention(convention)
    labels = tuple(METRICS) if metrics is None else metrics
    unknown = [label for label in labels if label not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric label(s) {unknown}; choose from {', '.join(METRICS)}")
    min_side = max((MIN_SIDE.get(label, 1) for label in labels), default=1)
    f, a, b = _as_luma_triple(fused, a, b, min_side)  # the one validation; the metrics run unchecked
    return MetricsReport({label: _UNCHECKED[label](f, a, b, chosen) for label in labels}, chosen.name)

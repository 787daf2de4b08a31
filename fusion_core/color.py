"""Colour conversion for DGD-Fusion: BT.601 full-range YCbCr (docs/design.md §1).

Fusion happens on luminance: A is gray, B is split into Y, Cb, Cr; the network fuses Y_A with Y_B and
the output is YCbCr -> RGB(Y_F, Cb_B, Cr_B). This module is the one place the BT.601 coefficients live.
Pure numpy so the metrics and the classical baselines (which must not import torch) can share it.
"""

from __future__ import annotations

import numpy as np

# BT.601 full range (JPEG/JFIF), values in the same unit as the input (0..1 or 0..255).
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735891647856, -0.331264108352144, 0.5],
        [0.5, -0.418687589158345, -0.081312410841655],
    ]
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray, *, peak: float = 1.0) -> np.ndarray:
    """RGB (H, W, 3) -> YCbCr (H, W, 3), same float unit; Cb and Cr are centred on peak / 2."""
    ycbcr = rgb.astype(np.float64) @ _RGB_TO_YCBCR.T
    ycbcr[..., 1:] += peak / 2
    return ycbcr


def ycbcr_to_rgb(ycbcr: np.ndarray, *, peak: float = 1.0) -> np.ndarray:
    """YCbCr (H, W, 3) -> RGB (H, W, 3), same float unit, not clipped."""
    centred = ycbcr.astype(np.float64).copy()
    centred[..., 1:] -= peak / 2
    return centred @ _YCBCR_TO_RGB.T


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB (H, W, 3) image as float64; a gray (H, W) image is returned as float64."""
    if image.ndim == 2:
        return image.astype(np.float64)
    return image.astype(np.float64) @ _RGB_TO_YCBCR[0]


def replace_luma(rgb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """RGB(Y = y, Cb and Cr of ``rgb``): (H, W, 3) and (H, W) in [0, 1] -> (H, W, 3) float64, not clipped.

    This is how a fused luminance takes on B's colour (docs/design.md §1); the chroma is B's, exactly.
    """
    ycbcr = rgb_to_ycbcr(rgb)
    ycbcr[..., 0] = y
    return ycbcr_to_rgb(ycbcr)


LUMA_WEIGHTS = tuple(float(w) for w in _RGB_TO_YCBCR[0])  # BT.601 (R, G, B) weights of Y, for torch code

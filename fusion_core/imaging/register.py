"""Pairs: reading sources A and B, matching their sizes, and aligning B to A by a translation.

DGD-Fusion (DOI 10.11918/202507016) fuses two registered images of one scene; ``read_pair`` reads both with
``read_image`` and makes them fit together. Choices that the paper leaves open, made here:

* Size: a mismatch is refused unless resampling is asked for, which resizes B to A's size with Pillow's
  bicubic filter (its kernel widens when shrinking, so downsizing is antialiased).
* Alignment: translation-only phase correlation (``estimate_shift``, refined to 1/20 pixel); the shift is
  applied by bilinear interpolation, edges repeated (``shift_image``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .read import ImageLoadError, LoadedImage, read_image

__all__ = ["READ_OPTIONS", "LoadedPair", "estimate_shift", "read_pair", "shift_image"]
READ_OPTIONS = frozenset({"frame", "window", "max_pixels"})


@dataclass(frozen=True, eq=False)
class LoadedPair:
    """Two images of one scene, same height and width.

    Attributes:
        a: Source A as read.
        b: Source B, resized and/or shifted to match A when asked.
        shift: (dy, dx) in pixels applied to B when aligned, else None.
        warnings: What was done to the pair (resampling, alignment).
    """

    a: LoadedImage
    b: LoadedImage
    shift: tuple[float, float] | None
    warnings: tuple[str, ...]

    @property
    def every_warning(self) -> tuple[str, ...]:
        """The warnings of reading A and B, each marked with its source ("A: ..."), then the pair's own."""
        return (*(f"A: {w}" for w in self.a.warnings), *(f"B: {w}" for w in self.b.warnings), *self.warnings)


def _taper(image: np.ndarray) -> np.ndarray:
    """Mean-free channel mean times a 2-D Hann window, so image borders do not dominate the spectrum."""
    gray = (image.mean(axis=2) if image.ndim == 3 else image).astype(np.float64)
    return (gray - gray.mean()) * np.outer(np.hanning(gray.shape[0]), np.hanning(gray.shape[1]))


def _refine_peak(spectrum: np.ndarray, peak: tuple[int, int], factor: int = 20) -> tuple[float, float]:
    """Peak of the inverse DFT of ``spectrum`` on a 1/factor-pixel grid within one pixel of ``peak``.

    A matrix-multiply DFT evaluates only that small grid (the single-step form of Guizar-Sicairos et
    al., Opt. Lett. 2008); a parabola through the integer samples would be biased toward integers.
    """
    offsets = np.arange(-factor, factor + 1) / factor  # (K,)
    rows, cols = peak[0] + offsets, peak[1] + offsets
    to_rows = np.exp(2j * np.pi * np.outer(rows, np.fft.fftfreq(spectrum.shape[0])))  # (K, H)
    to_cols = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(spectrum.shape[1]), cols))  # (W, K)
    local = (to_rows @ spectrum @ to_cols).real  # (K, K)
    best_row, best_col = np.unravel_index(int(np.argmax(local)), local.shape)
    return float(rows[best_row]), float(cols[best_col])


def estimate_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Translation (dy, dx) that, applied to ``b`` by ``shift_image``, best matches ``a``.

    Phase correlation: the inverse FFT of the normalised cross-power spectrum peaks at the shift. Both
    images are mean-free and Hann-tapered first (image borders would otherwise add a false peak at zero),
    and the peak is refined to 1/20 pixel by evaluating that inverse transform on a fine local grid.
    Colour images are compared by their channel mean. Translation only; reliable when the sources share
    structure (edges common to both), less so across very different modalities.

    Args:
        a: Reference image, (H, W) or (H, W, C).
        b: Moving image with the same H and W.

    Returns:
        (dy, dx) in pixels; positive dy moves the content of b down.
    """
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"estimate_shift needs equal sizes, got {a.shape[:2]} and {b.shape[:2]}")
    cross = np.fft.fft2(_taper(a)) * np.conj(np.fft.fft2(_taper(b)))  # (H, W)
    magnitude = np.abs(cross)
    # Near-empty bins (noise at the high frequencies of smooth images) get weight below 1 instead of 1:
    # full normalisation lets them drown the peak.
    spectrum = cross / (magnitude + 1e-3 * magnitude.max() + 1e-30)
    corr = np.fft.ifft2(spectrum).real
    peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy, dx = _refine_peak(spectrum, peak)
    height, width = corr.shape  # peaks past the middle are negative shifts (the DFT wraps around)
    return (dy - height if dy > height / 2 else dy), (dx - width if dx > width / 2 else dx)


def _shift_axis(x: np.ndarray, shift: float, axis: int) -> np.ndarray:
    """out[i] = x[i - shift] along one axis, linear interpolation, indices clamped (edges repeated)."""
    n = x.shape[axis]
    source = np.clip(np.arange(n) - shift, 0, n - 1)
    lower = np.floor(source).astype(int)
    weight = (source - lower).astype(np.float32).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    upper = np.minimum(lower + 1, n - 1)
    return np.take(x, lower, axis) * (1 - weight) + np.take(x, upper, axis) * weight


def shift_image(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Translate (H, W) or (H, W, C) pixels by (dy, dx); integer shifts are exact, edges repeated."""
    out = image.astype(np.float32)
    for axis, amount in enumerate(shift):
        out = _shift_axis(out, float(amount), axis)
    return out


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of [0, 1] pixels to (H, W) per channel in Pillow's float mode, clipped."""
    planes = pixels[..., None] if pixels.ndim == 2 else pixels
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize(size[::-1], Image.Resampling.BICUBIC))
        for plane in np.moveaxis(planes, -1, 0)
    ]
    return np.clip(np.stack(out, axis=-1).reshape(size + pixels.shape[2:]), 0.0, 1.0)


def _match_size(a: LoadedImage, b: LoadedImage, policy: str) -> tuple[LoadedImage, str]:
    (ha, wa), (hb, wb) = a.pixels.shape[:2], b.pixels.shape[:2]
    if policy == "refuse":
        raise ImageLoadError(
            f"the images differ in size: A is {ha} x {wa}, B is {hb} x {wb} (height x width); register "
            "them to one size, or pass on_size_mismatch='resample' to resize B to A's size"
        )
    note = f"B resized from {hb} x {wb} to {ha} x {wa} (height x width, bicubic) to match A"
    return replace(b, pixels=_resize(b.pixels, (ha, wa))), note


def _read_labelled(source, label: str, read_kwargs: dict) -> LoadedImage:
    try:
        return read_image(source, **read_kwargs)
    except ImageLoadError as exc:
        raise ImageLoadError(f"image {label}: {exc}") from exc


def read_pair(a, b, *, on_size_mismatch: str = "refuse", align: bool = False, **read_kwargs) -> LoadedPair:
    """Read sources A and B and make them the same size, optionally aligned.

    Args:
        a: Source A (reference), anything ``read_image`` accepts.
        b: Source B, resized and/or shifted to match A.
        on_size_mismatch: "refuse" (raise) or "resample" (bicubic resize of B to A's size).
        align: Estimate B's translation against A by phase correlation and undo it.
        **read_kwargs: ``frame``, ``window``, ``max_pixels`` for both; to read them differently, call
            ``read_image`` on each and pass the ``pixels`` arrays.

    Returns:
        LoadedPair; ``shift`` is the (dy, dx) applied to B when ``align`` is set.

    Raises:
        ImageLoadError: For every failure, naming the image at fault.
    """
    if on_size_mismatch not in ("refuse", "resample"):
        raise ImageLoadError(f"on_size_mismatch must be 'refuse' or 'resample', not {on_size_mismatch!r}")
    unknown = sorted(set(read_kwargs) - READ_OPTIONS)
    if unknown:
        raise ImageLoadError(f"unknown read option(s) {unknown}; use {sorted(READ_OPTIONS)}")
    image_a, image_b = _read_labelled(a, "A", read_kwargs), _read_labelled(b, "B", read_kwargs)
    notes, shift = [], None
    if image_a.pixels.shape[:2] != image_b.pixels.shape[:2]:
        image_b, note = _match_size(image_a, image_b, on_size_mismatch)
        notes.append(note)
    if align:
        shift = estimate_shift(image_a.pixels, image_b.pixels)
        image_b = replace(image_b, pixels=shift_image(image_b.pixels, shift))
        notes.append("B shifted by (dy, dx) = ({:.2f}, {:.2f}) pixels to align with A".format(*shift))
    return LoadedPair(image_a, image_b, shift, tuple(notes))


"""DGD-Fusion image input and output: whatever a person uploads becomes float32 pixels in [0, 1].

DGD-Fusion (dynamic gating diffusion fusion, DOI 10.11918/202507016) fuses two registered images. This
module reads PNG, JPEG, TIFF, BMP, WebP, GIF and DICOM files, bytes or numpy arrays into ``LoadedImage``
objects, checks and aligns pairs, and writes images as PNG, 16-bit TIFF or DICOM Secondary Capture;
``write_fused`` writes a fusion result in any of the three from its full-precision luminance.
Every failure to read raises ``ImageLoadError`` (a ``ValueError``) saying what was wrong and what to do.

Choices that neither the paper nor the file formats fix, made here:

* Scaling: integers divide by their stored range (uint8 by 255, uint16 by 65535, colour DICOM by
  2**BitsStored - 1), never by the image's own maximum, so a dark image stays dark. Floats already in
  [0, 1] are kept; other finite floats (and Pillow's 32-bit "I"/"F" modes) have no stored range and are
  stretched min..max with a warning. NaN or inf is an error.
* Channels: gray stays (H, W); RGB stays (H, W, 3) even when R = G = B (fusion works on YCbCr, where such
  an image has zero chroma, so nothing is lost); alpha is dropped with a warning; a palette becomes gray
  when all its colours are gray, else RGB. EXIF orientation is applied.
* Pillow keeps only 8 bits of 16-bit colour: uncompressed 16-bit RGB TIFF strips (as ``write_tiff16``
  writes them) are read exactly from the file instead, other 16-bit colour files get a warning.
* DICOM (in ``fusion_core.dicom``): modality LUT, then the stored, preset or explicit window, then
  MONOCHROME1 inversion; a de-identified ``DicomSummary`` rides along.
* Pairs: a size mismatch is refused unless resampling is asked for, which resizes B to A's size with
  Pillow's bicubic filter (its kernel widens when shrinking, so downsizing is antialiased). Alignment is
  translation-only phase correlation; the shift is applied by bilinear interpolation, edges repeated.
* Frames: a file of several frames (multi-frame DICOM, multi-page TIFF, animated GIF, PNG or WebP) gives the
  frame asked for, 0 unless told, with a warning naming it and the count, so no caller reads frame 0 unawares.
* Limits: the pixel count is checked from the header before decoding, and Pillow's decompression-bomb
  guard stays on (raise ``PIL.Image.MAX_IMAGE_PIXELS`` too when raising ``max_pixels`` above ~89 MP).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fusion_core.color import replace_luma
from fusion_core.dicom import (
    WINDOW_PRESETS,
    DicomError,
    DicomSummary,
    check_window,
    decode_frame,
    frame_geometry,
    parse_dicom,
    secondary_capture,
)

__all__ = [
    "FUSED_FORMATS", "DicomSummary", "ImageLoadError", "LoadedImage", "LoadedPair", "WINDOW_PRESETS",
    "estimate_shift", "fused_format", "fused_pixels", "read_image", "read_pair", "shift_image", "to_uint8",
    "write_dicom_secondary_capture", "write_fused", "write_png", "write_tiff16",
]
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")
FUSED_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".dcm": "dicom"}  # suffix -> what write_fused writes
READ_OPTIONS = frozenset({"frame", "window", "max_pixels"})
_EXIF_ORIENTATION = 0x0112
_NOT_RECOGNISED = (
    "not a recognised image: expected PNG, JPEG, TIFF, BMP, WebP, GIF or DICOM; check that the file "
    "is a complete image and not another kind of file renamed"
)


class ImageLoadError(ValueError):
    """An image could not be read; the message says what was wrong and what to do."""


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than ``max_pixels``, refused before decoding; its size and the limit kept for
    callers that word the advice themselves (the app has no ``max_pixels`` to raise)."""

    def __init__(self, height: int, width: int, limit: int):
        self.height, self.width, self.limit = height, width, limit
        super().__init__(f"the image has {height} x {width} = {height * width:,} pixels, more than the limit of "
                         f"{limit:,}; downscale it, or raise max_pixels if you trust the file")


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value, compare pixels yourself
class LoadedImage:
    """A decoded image.

    Attributes:
        pixels: float32 in [0, 1], (H, W) for gray or (H, W, 3) for RGB.
        bit_depth: Bits of the stored data (1, 8, 16, 32, ...).
        warnings: What was changed on the way, e.g. "alpha channel dropped", or which frame of a multi-frame
            file was read.
        dicom: De-identified DICOM summary, None for other sources.
        frames: Number of frames of the source (pages of a TIFF, frames of a GIF or DICOM); one was read.
    """

    pixels: np.ndarray
    bit_depth: int
    warnings: tuple[str, ...]
    dicom: DicomSummary | None = None
    frames: int = 1


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


# ---------------------------------------------------------------- arrays


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height < 1 or width < 1:
        raise ImageLoadError(f"the image is empty ({height} x {width} pixels); pass an image with pixels")
    if height * width > max_pixels:
        raise ImageTooLargeError(height, width, max_pixels)


def _check_frame(frame: int, count: int) -> None:
    if not 0 <= frame < count:
        raise ImageLoadError(
            f"frame {frame} is out of range: the source has {count} frame(s), valid indices 0..{count - 1}"
        )


def _with_frame_note(image: LoadedImage, kind: str, frame: int, count: int) -> LoadedImage:
    """``image`` with its frame count and, when the file holds several frames, a warning naming the one read:
    a multi-page TIFF or an animated GIF is read like a multi-frame DICOM, one frame chosen by index."""
    if count == 1:
        return image
    note = f"the {kind} file holds {count} frames; frame {frame} (counting from 0) was read"
    return replace(image, warnings=(*image.warnings, note), frames=count)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of low..high onto 0..1 (zeros for a constant image)."""
    if high == low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _scale_to_unit(arr: np.ndarray) -> tuple[np.ndarray, int, list[str]]:
    """Stored values -> float32 [0, 1]; returns (pixels, bit_depth, warnings)."""
    bits = arr.dtype.itemsize * 8
    if arr.dtype == np.bool_:
        return arr.astype(np.float32), 1, []
    if arr.dtype.kind == "u" and bits in (8, 16):
        return (arr / np.float32(2**bits - 1)).astype(np.float32), bits, []
    if arr.dtype.kind != "f":
        raise ImageLoadError(
            f"unsupported array dtype {arr.dtype}; pass uint8, uint16, bool or float in [0, 1] "
            "(e.g. arr.astype(np.uint8))"
        )
    if not np.isfinite(arr).all():
        raise ImageLoadError("the array contains NaN or infinite values; replace them (np.nan_to_num) first")
    low, high = float(arr.min()), float(arr.max())
    if low >= 0.0 and high <= 1.0:
        return arr.astype(np.float32), bits, []
    return _stretch(arr, low, high), bits, [f"float values in [{low:g}, {high:g}] stretched to [0, 1]"]


def _from_array(arr: np.ndarray, max_pixels: int) -> LoadedImage:
    """(H, W) or (H, W, 1|2|3|4) array -> LoadedImage; a 2nd or 4th channel is alpha and is dropped."""
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise ImageLoadError(
            f"unsupported array shape {arr.shape}; pass (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    _check_size(arr.shape[0], arr.shape[1], max_pixels)
    pixels, bits, notes = _scale_to_unit(arr)
    if pixels.ndim == 3:
        notes += ["alpha channel dropped"] if pixels.shape[2] in (2, 4) else []
        pixels = pixels[..., 0] if pixels.shape[2] <= 2 else pixels[..., :3]
    return LoadedImage(np.ascontiguousarray(pixels), bits, tuple(notes))


def _gray_if_neutral(image: LoadedImage) -> LoadedImage:
    """RGB whose three channels are identical -> (H, W); used for palettes only."""
    px = image.pixels
    if px.ndim == 3 and np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2]):
        return replace(image, pixels=np.ascontiguousarray(px[..., 0]))
    return image


# ---------------------------------------------------------------- Pillow formats


def _rawmode(tile) -> str:
    """The raw mode a Pillow tile decodes from, e.g. "RGB;16B" ("" when the plugin gives none)."""
    if isinstance(tile.args, str):
        return tile.args
    return str(tile.args[0]) if tile.args else ""


def _read_raw_rgb16(img: Image.Image, data: bytes) -> np.ndarray | None:
    """Exact 16-bit RGB from uncompressed TIFF strips, which Pillow would cut to 8 bits; else None."""
    exact = (
        img.format == "TIFF" and img.mode == "RGB" and bool(img.tile)
        and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
        and all(
            t.codec_name == "raw" and _rawmode(t) in ("RGB;16L", "RGB;16B") and tuple(t.args[1:3]) == (0, 1)
            and t.extents[0] == 0 and t.extents[2] == img.width
            for t in img.tile
        )
    )
    if not exact:
        return None
    out = np.empty((img.height, img.width, 3), np.uint16)
    for tile in img.tile:
        top, bottom = tile.extents[1], tile.extents[3]
        dtype = "<u2" if _rawmode(tile).endswith("L") else ">u2"
        strip = np.frombuffer(data, dtype, (bottom - top) * img.width * 3, tile.offset)
        out[top:bottom] = strip.reshape(bottom - top, img.width, 3)
    return out


def _standard_mode(img: Image.Image) -> Image.Image:
    """Pillow's many modes -> one of 1, L, LA, RGB, RGBA, I;16*, I, F, which numpy maps directly."""
    if img.mode in ("1", "L", "LA", "RGB", "RGBA", "I", "F") or img.mode.startswith("I;16"):
        return img
    return img.convert("RGBA" if img.has_transparency_data else "RGB")


def _from_pillow(data: bytes, frame: int, max_pixels: int) -> LoadedImage:
    """Decode a Pillow format; size and frame are checked from the header before decoding."""
    img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    _check_size(img.height, img.width, max_pixels)
    count = getattr(img, "n_frames", 1)
    _check_frame(frame, count)
    img.seek(frame)
    return _with_frame_note(_decode_pillow(img, data, max_pixels), str(img.format), frame, count)


def _decode_pillow(img: Image.Image, data: bytes, max_pixels: int) -> LoadedImage:
    """The frame ``img`` is at, as a LoadedImage."""
    exact = _read_raw_rgb16(img, data)
    if exact is not None:
        return _from_array(exact, max_pixels)
    notes = ("16-bit colour read at 8 bits (Pillow's limit)",) if any(
        ";16" in _rawmode(t) for t in img.tile) and not img.mode.startswith("I") else ()
    is_palette = img.mode in ("P", "PA")
    img = _standard_mode(ImageOps.exif_transpose(img))
    arr = np.asarray(img)
    image = _from_array(arr.astype(np.float32) if img.mode in ("I", "F") else arr, max_pixels)
    image = _gray_if_neutral(image) if is_palette else image
    return replace(image, warnings=notes + image.warnings)


# ---------------------------------------------------------------- reading


def _check_options(frame, max_pixels) -> None:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise ImageLoadError(f"frame must be an integer index, not {frame!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ImageLoadError(f"max_pixels must be a positive integer, not {max_pixels!r}")


def _source_bytes(source) -> bytes:
    """The bytes of a path or bytes source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"file not found: {path}; check the path")
        if path.is_dir():
            raise ImageLoadError(f"{path} is a directory; pass the path of one image file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(f"cannot read {path} ({exc}); check that the file is readable") from exc
    else:
        raise ImageLoadError(f"cannot read a {type(source).__name__}; pass a path, bytes or a numpy array")
    if not data:
        raise ImageLoadError("the file is empty (0 bytes); upload or export it again")
    return data


def _from_dicom(data: bytes, frame: int, window, max_pixels: int) -> LoadedImage:
    """DICOM bytes -> LoadedImage; size and frame are checked from the header before decoding."""
    dataset = parse_dicom(data)
    if dataset is None:
        raise ImageLoadError(_NOT_RECOGNISED)
    rows, columns, frames = frame_geometry(dataset)
    _check_size(rows, columns, max_pixels)
    _check_frame(frame, frames)
    decoded = decode_frame(dataset, frame, window)
    return _with_frame_note(LoadedImage(decoded.pixels, decoded.bit_depth, decoded.warnings, decoded.summary),
                            "DICOM", frame, frames)


def _read_any(source, frame: int, window, max_pixels: int) -> LoadedImage:
    """Arrays directly; bytes by Pillow unless they carry the DICOM preamble; what Pillow rejects as DICOM."""
    if isinstance(source, np.ndarray):
        _check_frame(frame, 1)
        return _from_array(source, max_pixels)
    data = _source_bytes(source)
    if data[128:132] != b"DICM":
        try:
            return _from_pillow(data, frame, max_pixels)
        except Image.UnidentifiedImageError:
            pass  # perhaps a DICOM dataset without preamble
    return _from_dicom(data, frame, window, max_pixels)


def read_image(
    source: str | os.PathLike | bytes | np.ndarray,
    *,
    frame: int = 0,
    window: str | tuple[float, float] | None = None,
    max_pixels: int = 50_000_000,
) -> LoadedImage:
    """Read an image file, its bytes, or an array into float32 pixels in [0, 1].

    DICOM is recognised by its "DICM" preamble or, failing that and failing Pillow, by pydicom finding
    image attributes; the file extension plays no part.

    Args:
        source: Path, file content, or array ((H, W), (H, W, 1|3|4); uint8, uint16, bool or float).
        frame: Frame index of a multi-frame DICOM, TIFF or GIF.
        window: Grayscale DICOM only: a ``WINDOW_PRESETS`` name or (width, level) in modality units;
            None uses the stored window, else the full range. Ignored, with a warning, elsewhere.
        max_pixels: Largest height x width accepted, checked before decoding.

    Returns:
        LoadedImage with pixels (H, W) or (H, W, 3).

    Raises:
        ImageLoadError: For every failure, and no other exception type.
    """
    try:
        _check_options(frame, max_pixels)
        window = check_window(window)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _read_any(source, int(frame), window, int(max_pixels))
    except ImageLoadError:
        raise
    except DicomError as exc:
        raise ImageLoadError(str(exc)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(
            f"refused as a possible decompression bomb ({exc}); downscale the image, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        ) from exc
    except MemoryError as exc:
        raise ImageLoadError("not enough memory to decode the image; downscale it or lower max_pixels") from exc
    except Exception as exc:  # the contract: nothing but ImageLoadError leaves this function
        raise ImageLoadError(
            f"could not decode the image ({type(exc).__name__}: {exc}); it may be truncated or damaged: "
            "export it again"
        ) from exc
    if window is not None and image.dicom is None:
        image = replace(image, warnings=image.warnings + ("window ignored: only DICOM images are windowed",))
    return image


# ---------------------------------------------------------------- pairs


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


# ---------------------------------------------------------------- writing


def _writable(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) -> (H, W) or (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if (image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise ValueError(f"cannot write an image of shape {image.shape}; pass (H, W), (H, W, 1) or (H, W, 3)")
    return image


def _unit_float(image: np.ndarray) -> np.ndarray:
    if image.dtype.kind != "f":
        raise ValueError(f"expected uint8 or float pixels in [0, 1], got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("the image contains NaN or infinite values; replace them before writing")
    return np.clip(image, 0.0, 1.0)  # small over/undershoot from resampling is expected


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 by rounding to nearest (values outside [0, 1] clipped); uint8 passes through."""
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        return pixels
    return np.round(_unit_float(pixels) * 255.0).astype(np.uint8)


def _to_uint16(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        return image
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * 257  # 255 -> 65535 exactly
    return np.round(_unit_float(image) * 65535.0).astype(np.uint16)


def _tiff16_bytes(image: np.ndarray) -> bytes:
    """Minimal little-endian baseline TIFF 6.0: one IFD, one uncompressed strip, 16 bits per sample.

    Pillow cannot create 16-bit RGB images, so gray and RGB are both written here: gray as BlackIsZero,
    RGB chunky (PlanarConfiguration 1, the default). No resolution tags; readers do not need them.
    """
    height, width = image.shape[:2]
    samples = 1 if image.ndim == 2 else 3
    strip = np.ascontiguousarray(image, dtype="<u2").tobytes()
    bits_offset = 8 + 2 + 9 * 12 + 4  # header, entry count, 9 entries, next-IFD offset
    strip_offset = bits_offset + (2 * samples if samples > 1 else 0)
    entries = (  # (tag, type 3 = SHORT / 4 = LONG, count, value or offset), tags ascending
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, samples, 16 if samples == 1 else bits_offset),
        (259, 3, 1, 1), (262, 3, 1, 1 if samples == 1 else 2), (273, 4, 1, strip_offset),
        (277, 3, 1, samples), (278, 4, 1, height), (279, 4, 1, len(strip)),
    )
    ifd = b"".join(
        struct.pack("<HHIH2x" if kind == 3 and count == 1 else "<HHII", tag, kind, count, value)
        for tag, kind, count, value in entries
    )
    bits = struct.pack(f"<{samples}H", *[16] * samples) if samples > 1 else b""
    return b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + struct.pack("<I", 0) + bits + strip


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an 8-bit PNG from uint8 or float [0, 1] pixels, (H, W[, 1]) gray or (H, W, 3) RGB."""
    Image.fromarray(to_uint8(_writable(image))).save(path, format="PNG")


def write_tiff16(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a 16-bit TIFF from uint16 (as is), uint8 (x 257) or float [0, 1] (x 65535, rounded) pixels."""
    Path(path).write_bytes(_tiff16_bytes(_to_uint16(_writable(image))))


def write_dicom_secondary_capture(
    path: str | os.PathLike, image: np.ndarray, *, modality_hint: str | None = None
) -> None:
    """Write a DICOM Secondary Capture (8-bit MONOCHROME2 or RGB) that carries no input identifiers.

    The dataset is built from the pixels alone (``fusion_core.dicom.secondary_capture``): new UIDs,
    PatientName "Anonymous", PatientID "ANONYMOUS", ImageType DERIVED\\SECONDARY.

    Args:
        path: Output file.
        image: uint8 or float [0, 1] pixels, (H, W[, 1]) or (H, W, 3).
        modality_hint: Modality code of the sources ("MR", "CT", ...); "OT" (other) when None.
    """
    dataset = secondary_capture(to_uint8(_writable(image)), modality_hint)
    dataset.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------- fusion results


def fused_format(path: str | os.PathLike) -> str:
    """What ``write_fused`` writes to ``path``, from its suffix: "png", "tiff" (16-bit) or "dicom".

    Raises:
        ValueError: any other suffix; lossy formats (JPEG) are not offered, they would add artefacts.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FUSED_FORMATS:
        raise ValueError(f"cannot write a fused image to {Path(path).name!r}: use a name ending in .png, "
                         ".tif or .tiff (16-bit) or .dcm")
    return FUSED_FORMATS[suffix]


def _source_b(b: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Source B as the pipeline saw it: float32 in [0, 1], (H, W) or (H, W, 3)."""
    b = _writable(b)
    if b.shape[:2] != size:
        raise ValueError(f"B is {b.shape[:2]} but the fused luminance is {size} (height, width); pass the B "
                         "that was fused")
    if b.dtype in (np.uint8, np.uint16):
        return _scale_to_unit(b)[0]
    return _unit_float(b).astype(np.float32)


def fused_pixels(y_fused: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fused image at full precision: RGB(Y_F, Cb_B, Cr_B) clipped to [0, 1] for a colour B, else Y_F.

    ``FusionResult.fused`` is this image rounded to 8 bits (``to_uint8``), exactly.

    Args:
        y_fused: (H, W) fused luminance in [0, 1] (``FusionResult.y_fused``).
        b: source B as fused, (H, W[, 1]) gray or (H, W, 3) RGB; float in [0, 1] (as ``read_image`` gives
            it), uint8 or uint16. Only its chroma is used.
    Returns:
        float (H, W) for a gray B, (H, W, 3) float64 for a colour B, in [0, 1].
    """
    y_fused = np.asarray(y_fused)
    if y_fused.ndim != 2:
        raise ValueError(f"the fused luminance must be (H, W), got shape {y_fused.shape}")
    y_fused, b = _unit_float(y_fused), _source_b(b, y_fused.shape)
    return np.clip(replace_luma(b, y_fused), 0.0, 1.0) if b.ndim == 3 else y_fused


def write_fused(path: str | os.PathLike, y_fused: np.ndarray, b: np.ndarray) -> None:
    """Write a fusion result, the format chosen by the suffix of ``path`` (``fused_format``).

    Every format starts from the full-precision ``fused_pixels(y_fused, b)``: ``.png`` and ``.dcm`` (DICOM
    Secondary Capture) hold it rounded to 8 bits, the same pixels as ``FusionResult.fused``; ``.tif`` /
    ``.tiff`` hold it rounded to 16 bits, so a colour result keeps the luminance's precision instead of
    256 levels.

    Args:
        path: output file; .png, .tif, .tiff or .dcm (any other suffix raises ValueError, nothing written).
        y_fused: (H, W) fused luminance in [0, 1].
        b: source B as fused, (H, W[, 1]) or (H, W, 3), float in [0, 1], uint8 or uint16.
    """
    kind = fused_format(path)
    pixels = fused_pixels(y_fused, b)
    if kind == "tiff":
        write_tiff16(path, pixels)
    elif kind == "dicom":
        write_dicom_secondary_capture(path, pixels)
    else:
        write_png(path, pixels)

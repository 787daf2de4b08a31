"""Reading images: whatever a person uploads becomes float32 pixels in [0, 1].

DGD-Fusion (dynamic gating diffusion fusion, DOI 10.11918/202507016) fuses two registered images. This
module reads PNG, JPEG, TIFF, BMP, WebP, GIF and DICOM files, bytes or numpy arrays into ``LoadedImage``
objects (``read_image``). Every failure raises ``ImageLoadError`` (a ``ValueError``) saying what was wrong and
what to do; ``ImageTooLargeError`` is the one for a size over the limit.

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
* Frames: a file of several frames (multi-frame DICOM, multi-page TIFF, animated GIF, PNG or WebP) gives the
  frame asked for, 0 unless told, with a warning naming it and the count, so no caller reads frame 0 unawares.
* Limits: the pixel count is checked from the header before decoding, and Pillow's decompression-bomb
  guard stays on (raise ``PIL.Image.MAX_IMAGE_PIXELS`` too when raising ``max_pixels`` above ~89 MP).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fusion_core.dicom import (
    WINDOW_PRESETS,
    DicomError,
    DicomSummary,
    check_window,
    decode_frame,
    frame_geometry,
    parse_dicom,
)

__all__ = ["PILLOW_FORMATS", "DicomSummary", "ImageLoadError", "ImageTooLargeError", "LoadedImage",
           "WINDOW_PRESETS", "read_image"]
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")
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


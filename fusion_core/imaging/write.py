"""Writing images: PNG (8-bit), 16-bit TIFF and DICOM Secondary Capture, and fusion results in any of them.

DGD-Fusion (DOI 10.11918/202507016) fuses the luminance of two images and keeps the chroma of source B.
``write_fused`` writes such a result from its full-precision luminance (``fused_pixels``) in the format its
file name asks for (``fused_format``): one writer for the command line and the app, so their files agree.
Pillow cannot create 16-bit RGB images, so the 16-bit TIFF is encoded here (``write_tiff16``).

Every file is written atomically (``write_atomically``): encoded in memory, written to a hidden temporary file
beside the target, fsynced and renamed over it. A full disk, a missing permission or a killed process leaves
the previous file at that path as it was, never a truncated one, and a failure raises ``OutputWriteError``
(an ``OSError``) whose message says in one line what happened ("not enough disk space to write x.tif").
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import secrets
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from fusion_core.color import replace_luma
from fusion_core.dicom import secondary_capture

from .read import _scale_to_unit

__all__ = ["FUSED_FORMATS", "OutputWriteError", "fused_format", "fused_pixels", "to_uint8", "write_atomically",
           "write_csv", "write_dicom_secondary_capture", "write_fused", "write_png", "write_tiff16"]
FUSED_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".dcm": "dicom"}  # suffix -> what write_fused writes
# errno -> what happened, in words; {path} is the file asked for. Other codes: "could not write {path} (reason)".
_WRITE_ERRORS = {
    errno.ENOSPC: "not enough disk space to write {path}; free some space or write elsewhere",
    errno.EDQUOT: "not enough disk space to write {path} (disk quota exceeded); free some space or write elsewhere",
    errno.EFBIG: "{path} would be larger than the file system allows; write it elsewhere",
    errno.EACCES: "no permission to write {path}; choose a folder you can write to",
    errno.EPERM: "no permission to write {path}; choose a folder you can write to",
    errno.EROFS: "cannot write {path}: its file system is read-only; write elsewhere",
    errno.ENOENT: "cannot write {path}: its folder does not exist; create it first",
    errno.EISDIR: "cannot write {path}: it is a folder; give a file name",
}


# ---------------------------------------------------------------- atomic files


class OutputWriteError(OSError):
    """An output file could not be written; whatever was at its path before is unchanged.

    ``str(error)`` says what happened in one line ("not enough disk space to write x.tif; ..."); as for any
    ``OSError``, ``errno`` is the system's code, ``strerror`` its reason and ``filename`` the path asked for.
    """

    def __str__(self) -> str:
        template = _WRITE_ERRORS.get(self.errno, "could not write {path} ({reason})")
        return template.format(path=self.filename, reason=self.strerror)


def _write_error(path: str | os.PathLike, error: OSError) -> OutputWriteError:
    reason = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return OutputWriteError(error.errno, reason, os.fspath(path))


def _open_temporary(target: Path) -> tuple[int, Path]:
    """A new, empty, hidden file beside ``target`` named after it alone: (descriptor, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = target.with_name(f".{target.name[:50]}.tmp-{secrets.token_hex(4)}")  # 50: within NAME_MAX
        try:
            return os.open(temporary, flags, 0o666), temporary  # 0o666 less the umask, as open() gives
        except FileExistsError:
            continue  # another writer drew the same name


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]  # os.write may write less than asked


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the system allows (not on Windows, not on every file system)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Replace the file ``path`` by ``data`` in one step: it holds either its old content or all of ``data``.

    ``data`` goes to a hidden temporary file in the same folder (``.NAME.tmp-RANDOM``, so the rename never
    crosses file systems), is flushed and fsynced, and the temporary file is renamed over ``path``
    (``os.replace``); the folder is fsynced after, where possible. An existing file keeps its permission bits;
    a symbolic link is followed and its target replaced. For any file, not only images: tables too.

    Raises:
        OutputWriteError: the file could not be written (disk full, no permission, no such folder, ...); the
            temporary file is removed and an existing file at ``path`` is untouched.
    """
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    if target.is_file() and not os.access(target, os.W_OK):  # a read-only file stays protected, as open() keeps it
        raise _write_error(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    try:
        fd, temporary = _open_temporary(target)
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        try:
            with contextlib.suppress(FileNotFoundError):  # keep the permission bits of the file replaced
                os.chmod(fd if os.chmod in os.supports_fd else temporary, os.stat(target).st_mode & 0o777)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException as error:  # a kill (KeyboardInterrupt) too: no temporary file is left behind
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise
    _sync_folder(target.parent)


def write_csv(path: str | os.PathLike, header: list[str], rows) -> None:
    """A CSV table (a header row, then ``rows``), UTF-8, written atomically (``write_atomically``)."""
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(path, table.getvalue().encode("utf-8"))


# ---------------------------------------------------------------- pixels


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
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(_writable(image))).save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())


def write_tiff16(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a 16-bit TIFF from uint16 (as is), uint8 (x 257) or float [0, 1] (x 65535, rounded) pixels."""
    write_atomically(path, _tiff16_bytes(_to_uint16(_writable(image))))


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
    buffer = io.BytesIO()
    secondary_capture(to_uint8(_writable(image)), modality_hint).save_as(buffer, enforce_file_format=True)
    write_atomically(path, buffer.getvalue())


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

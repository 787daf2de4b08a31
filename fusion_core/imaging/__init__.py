"""DGD-Fusion image input and output, one module per job; every name is re-exported here.

* ``read``: files, bytes or arrays (PNG, JPEG, TIFF, BMP, WebP, GIF, DICOM) -> ``LoadedImage``, float32 pixels
  in [0, 1]; size and frame checks; ``ImageLoadError`` for every failure.
* ``register``: pairs -> ``LoadedPair``: size checks or bicubic resampling, translation estimate and alignment.
* ``write``: PNG, 16-bit TIFF and DICOM Secondary Capture, each written atomically (``write_atomically``,
  ``OutputWriteError``); ``write_fused`` for fusion results.

numpy, Pillow and pydicom only: no torch, so the app and the command line can read and write without it.
"""

from .read import (
    PILLOW_FORMATS,
    WINDOW_PRESETS,
    DicomSummary,
    ImageLoadError,
    ImageTooLargeError,
    LoadedImage,
    read_image,
)
from .register import READ_OPTIONS, LoadedPair, estimate_shift, read_pair, shift_image
from .write import (
    FUSED_FORMATS,
    OutputWriteError,
    fused_format,
    fused_pixels,
    to_uint8,
    write_atomically,
    write_csv,
    write_dicom_secondary_capture,
    write_fused,
    write_png,
    write_tiff16,
)

__all__ = [
    "FUSED_FORMATS", "PILLOW_FORMATS", "READ_OPTIONS", "WINDOW_PRESETS", "DicomSummary", "ImageLoadError",
    "ImageTooLargeError", "LoadedImage", "LoadedPair", "OutputWriteError", "estimate_shift", "fused_format",
    "fused_pixels", "read_image", "read_pair", "shift_image", "to_uint8", "write_atomically", "write_csv",
    "write_dicom_secondary_capture", "write_fused", "write_png", "write_tiff16",
]

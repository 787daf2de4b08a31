"""DGD-Fusion DICOM support: one frame of a DICOM file to [0, 1] pixels, and Secondary Capture export.

DGD-Fusion (DOI 10.11918/202507016) fuses MRI with CT, PET or SPECT, which arrive as DICOM. The public
entry point is ``fusion_core.imaging``: it checks sizes and frame indices with this module's header
helpers and re-raises ``DicomError`` as ``ImageLoadError``. Choices made here:

* Detection: bytes with the 128-byte preamble and "DICM" are DICOM; bytes without it count only when
  pydicom parses them and finds Rows and pixel data (old headerless datasets). Extensions play no part.
* Gray pixels: stored values -> modality LUT (rescale slope/intercept, ``apply_modality_lut``) -> window
  -> MONOCHROME1 inversion. The window is the DICOM linear VOI function (PS3.3 C.11.2.1.2.1) scaled to
  [0, 1]: the stored one (first value when several), a ``WINDOW_PRESETS`` name or an explicit
  (width, level); with none, or with ``FULL_RANGE``, min..max of the modality values is stretched
  linearly. VOI LUT tables and the SIGMOID function are not used.
* Colour pixels (RGB, YBR converted to RGB by pydicom, palette through its LUT) divide by the stored bit
  range and are never windowed.
* Decoders are pydicom's plugins: native, deflate, RLE (numpy) and, through Pillow, JPEG baseline and
  JPEG 2000. JPEG-LS, JPEG lossless and 12-bit JPEG need pyjpegls, gdcm or pylibjpeg-libjpeg (GPL-3.0,
  hence not a dependency); without one the error names what to install.
* Privacy: ``DicomSummary`` is built from an allow-list of technical attributes, each parsed into a
  number or matched against a code pattern, never by deleting identifiers. Parser warnings, which can
  quote element values, are discarded. A Secondary Capture export is built from its pixels alone.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

FULL_RANGE = "full"  # the window option that ignores any stored window: the whole range of the values
WINDOW_PRESETS: dict[str, tuple[float, float]] = {  # name -> (width, level), Hounsfield units
    "brain": (80.0, 40.0),
    "soft_tissue": (350.0, 50.0),
    "bone": (2000.0, 500.0),
    "lung": (1500.0, -600.0),
}
GRAY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
_COLOUR_PHOTOMETRICS = ("RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")  # a DICOM CS value such as a Modality


class DicomError(ValueError):
    """A DICOM file could not be read as asked; ``imaging.read_image`` re-raises it as ImageLoadError."""


@dataclass(frozen=True)
class DicomSummary:
    """De-identified facts about a DICOM image, for display beside it.

    Attributes:
        modality: DICOM Modality code ("CT", "MR", ...), "unknown" when absent or malformed.
        rows: Frame height in pixels.
        columns: Frame width in pixels.
        frames: Number of frames in the file.
        frame: Index of the frame that was read.
        photometric: Photometric interpretation as stored ("MONOCHROME2", "RGB", ...) or "other".
        bits_allocated: Bits per stored sample.
        bits_stored: Significant bits per sample.
        pixel_spacing: (row, column) spacing in mm, None when not stored.
        window: (width, level) in modality units that mapped the frame to [0, 1]; None for colour.
        window_source: "stored", "preset <name>", "explicit", "full range" or "none (colour)".
        transfer_syntax: Transfer syntax name, e.g. "Explicit VR Little Endian".
    """

    modality: str
    rows: int
    columns: int
    frames: int
    frame: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    pixel_spacing: tuple[float, float] | None
    window: tuple[float, float] | None
    window_source: str
    transfer_syntax: str

    def as_dict(self) -> dict[str, str]:
        """Display text for each fact; "n/a" where a value is missing."""
        spacing = "n/a" if self.pixel_spacing is None else "{:g} x {:g} mm".format(*self.pixel_spacing)
        window = "n/a" if self.window is None else "W {:g} / L {:g}".format(*self.window)
        return {
            "modality": self.modality,
            "size": f"{self.rows} x {self.columns} (rows x columns)",
            "frame": f"{self.frame + 1} of {self.frames}",
            "pixel_spacing": spacing,
            "window": f"{window} ({self.window_source})",
            "photometric": self.photometric,
            "bits": f"{self.bits_stored} stored of {self.bits_allocated} allocated",
            "transfer_syntax": self.transfer_syntax,
        }


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class DicomFrame:
    """One decoded frame.

    Attributes:
        pixels: float32 in [0, 1], (H, W) gray or (H, W, 3) RGB.
        bit_depth: BitsStored of the file.
        warnings: Decoder and window warnings.
        summary: The de-identified summary.
    """

    pixels: np.ndarray
    bit_depth: int
    warnings: tuple[str, ...]
    summary: DicomSummary


# ---------------------------------------------------------------- header


def parse_dicom(data: bytes) -> Dataset | None:
    """Parse DICOM bytes; None when they are not DICOM.

    Raises:
        DicomError: The bytes carry the DICOM preamble but cannot be parsed.
    """
    has_preamble = data[128:132] == b"DICM"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # parser warnings may quote identifying values; never shown
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
            is_image = "Rows" in dataset and any(k in dataset for k in _PIXEL_KEYWORDS)
    except Exception as exc:  # pydicom raises many types on damaged or foreign bytes
        if has_preamble:
            raise DicomError(
                f"the DICOM file could not be parsed ({exc}); it may be truncated: export it again"
            ) from exc
        return None
    return dataset if has_preamble or is_image else None


def frame_geometry(dataset: Dataset) -> tuple[int, int, int]:
    """(rows, columns, frames) read from the header, before any pixel is decoded."""
    if not any(k in dataset for k in _PIXEL_KEYWORDS):
        raise DicomError(
            "the DICOM file has no pixel data (it may be a report, plan or other non-image object); "
            "export an image instead"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a malformed value raises below, with a message
            return int(dataset.Rows), int(dataset.Columns), int(dataset.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomError(f"the DICOM image size or frame count is missing or malformed ({exc})") from exc


def check_window(window) -> str | tuple[float, float] | None:
    """Validate a ``window`` option: None, ``FULL_RANGE``, a ``WINDOW_PRESETS`` name or (width, level), width > 1."""
    if window is None or window == FULL_RANGE or (isinstance(window, str) and window in WINDOW_PRESETS):
        return window
    if isinstance(window, str):
        raise DicomError(f"unknown window preset {window!r}; use one of {', '.join(WINDOW_PRESETS)} or {FULL_RANGE!r}")
    try:
        width, level = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"window must be a preset name or a (width, level) pair, not {window!r}") from exc
    if not (np.isfinite([width, level]).all() and width > 1):
        raise DicomError(f"window width must be a finite number above 1, not {width:g}; e.g. (400, 40)")
    return width, level


# ---------------------------------------------------------------- pixels


def _require_decoder(dataset: Dataset) -> None:
    """Name the transfer syntax of headerless files, and fail clearly when no decoder is installed."""
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit, little = dataset.original_encoding
        little_syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        dataset.file_meta.TransferSyntaxUID = little_syntax if little else ExplicitVRBigEndian
    uid = UID(dataset.file_meta.TransferSyntaxUID)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise DicomError(f"pydicom has no decoder for transfer syntax {uid.name}; export it uncompressed") from exc
    if not decoder.is_available:
        raise DicomError(
            f"the DICOM pixel data is compressed as {uid.name} and no installed decoder reads it; install "
            f"one of: {'; '.join(decoder.missing_dependencies)} - or export the image uncompressed"
        )


def _decode(dataset: Dataset, frame: int) -> tuple[np.ndarray, list[str]]:
    """Stored values of one frame through pydicom's pixel plugins, with the decoder's warnings."""
    _require_decoder(dataset)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stored = pixel_array(dataset, index=frame)
    except Exception as exc:  # every plugin failure means damaged pixel data
        raise DicomError(
            f"the DICOM pixel data could not be decoded ({exc}); the file may be damaged: export it again"
        ) from exc
    return stored, [str(w.message) for w in caught]


def _stored_window(dataset: Dataset) -> tuple[float, float] | None:
    """First (WindowWidth, WindowCenter) of the file; None when absent or unusable (width <= 1)."""
    try:
        values = (dataset[keyword].value for keyword in ("WindowWidth", "WindowCenter"))
        width, level = (float(v[0] if isinstance(v, (MultiValue, list)) else v) for v in values)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return (width, level) if np.isfinite([width, level]).all() and width > 1 else None


def _choose_window(dataset: Dataset, window) -> tuple[tuple[float, float] | None, str, list[str]]:
    """(width, level), or None for the full range; where it came from; warnings."""
    if window == FULL_RANGE:
        return None, "full range", []
    if isinstance(window, str):
        notes = [] if dataset.get("Modality") == "CT" else [f"window preset {window!r} is in HU, meant for CT"]
        return WINDOW_PRESETS[window], f"preset {window}", notes
    if window is not None:
        return window, "explicit", []
    stored = _stored_window(dataset)
    if stored is not None:
        return stored, "stored", []
    unusable = "WindowWidth" in dataset
    return None, "full range", ["the stored window is unusable; full range shown"] if unusable else []


def _apply_window(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """DICOM linear VOI function (PS3.3 C.11.2.1.2.1) with output range [0, 1]; needs width > 1."""
    return np.clip((values - (level - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0).astype(np.float32)


def _gray_pixels(dataset: Dataset, stored: np.ndarray, window):
    """Modality LUT, window, MONOCHROME1 inversion; returns (pixels, window used, source, warnings)."""
    values = apply_modality_lut(stored, dataset).astype(np.float64)
    if not np.isfinite(values).all():
        raise DicomError("the DICOM pixel values include NaN or infinity; export the image again")
    chosen, source, notes = _choose_window(dataset, window)
    if chosen is None:
        low, high = float(values.min()), float(values.max())
        chosen = (high - low, (high + low) / 2.0)
        span = high - low if high > low else 1.0  # a constant frame becomes black
        pixels = ((values - low) / span).astype(np.float32)
    else:
        pixels = _apply_window(values, *chosen)
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels, chosen, source, notes


def _colour_pixels(dataset: Dataset, stored: np.ndarray) -> np.ndarray:
    """RGB (pydicom has converted YBR) or palette -> float32 [0, 1] by the stored bit range."""
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        stored, bits = apply_color_lut(stored, dataset), int(dataset.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(dataset.BitsStored)
    return (stored / (2.0**bits - 1.0)).astype(np.float32)


def _bits_stored(dataset: Dataset) -> int:
    return int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 32)  # float pixel data: 32


def _summary(dataset: Dataset, frame: int, window, source: str) -> DicomSummary:
    """The allow-listed, parsed facts of ``DicomSummary``; nothing else of the file is read."""
    modality, photometric = str(dataset.get("Modality", "")), str(dataset.PhotometricInterpretation)
    try:
        row, column = (float(v) for v in dataset.PixelSpacing)
        spacing = (row, column)
    except (AttributeError, TypeError, ValueError):
        spacing = None
    return DicomSummary(
        modality=modality if _CODE_STRING.fullmatch(modality) else "unknown",
        rows=int(dataset.Rows), columns=int(dataset.Columns),
        frames=int(dataset.get("NumberOfFrames") or 1), frame=frame,
        photometric=photometric if photometric in GRAY_PHOTOMETRICS + _COLOUR_PHOTOMETRICS else "other",
        bits_allocated=int(dataset.get("BitsAllocated") or 0), bits_stored=_bits_stored(dataset),
        pixel_spacing=spacing, window=window, window_source=source,
        transfer_syntax=UID(dataset.file_meta.TransferSyntaxUID).name,
    )


def decode_frame(dataset: Dataset, frame: int, window) -> DicomFrame:
    """Decode one frame (index checked by the caller) and map it to [0, 1].

    Args:
        dataset: A dataset from ``parse_dicom``.
        frame: Frame index.
        window: As returned by ``check_window``; used for gray images only.

    Returns:
        DicomFrame with pixels (H, W) or (H, W, 3) and the de-identified summary.
    """
    stored, notes = _decode(dataset, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # value warnings may quote what the summary's checks keep out
        if dataset.get("PhotometricInterpretation") in GRAY_PHOTOMETRICS:
            pixels, used, source, more = _gray_pixels(dataset, stored, window)
        else:
            pixels, used, source = _colour_pixels(dataset, stored), None, "none (colour)"
            more = ["window ignored: colour DICOM images are not windowed"] if window is not None else []
        summary = _summary(dataset, frame, used, source)
    return DicomFrame(np.ascontiguousarray(pixels), _bits_stored(dataset), tuple(notes + more), summary)


# ---------------------------------------------------------------- export


def secondary_capture(pixels: np.ndarray, modality_hint: str | None = None) -> Dataset:
    """A new Secondary Capture dataset holding ``pixels`` and nothing taken from any input.

    Fresh UIDs, PatientName "Anonymous", PatientID "ANONYMOUS", ImageType DERIVED\\SECONDARY. A gray
    image gets the window (256, 128), which the DICOM linear VOI function maps 0..255 onto itself.

    Args:
        pixels: uint8, (H, W) gray (MONOCHROME2) or (H, W, 3) RGB.
        modality_hint: Modality code of the sources ("MR", "CT", ...); "OT" (other) when None.

    Returns:
        The dataset, ready for ``save_as(path, enforce_file_format=True)``.
    """
    modality = "OT" if modality_hint is None else str(modality_hint).strip().upper()
    if not _CODE_STRING.fullmatch(modality):
        raise ValueError(f"modality_hint must be a DICOM modality code such as 'MR', not {modality_hint!r}")
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.set_pixel_data(pixels, "MONOCHROME2" if pixels.ndim == 2 else "RGB", 8)  # sets SOPInstanceUID
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.PatientName, dataset.PatientID = "Anonymous", "ANONYMOUS"
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                    "StudyID", "AccessionNumber", "PatientOrientation"):
        setattr(dataset, keyword, "")  # type 2 attributes: present, empty
    dataset.Modality, dataset.ConversionType = modality, "WSD"  # WSD: workstation
    dataset.SeriesNumber, dataset.InstanceNumber = 1, 1
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    dataset.DerivationDescription = "Fused by DGD-Fusion"
    if pixels.ndim == 2:
        dataset.WindowWidth, dataset.WindowCenter = 256, 128
    return dataset

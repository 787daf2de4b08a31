"""Tests for fusion_core.imaging (and the DICOM half in fusion_core.dicom).

Every fixture is made here (Pillow, pydicom, numpy) or is one of pydicom's bundled test files; nothing is
read from outside the repository and nothing touches the network.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless

from conftest import texture
from fusion_core.imaging import (
    WINDOW_PRESETS,
    ImageLoadError,
    ImageTooLargeError,
    read_image,
    read_pair,
    to_uint8,
    write_dicom_secondary_capture,
)

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19610203",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "Who^Doctor",
}
PRIVATE_SECRET = "PRIVATE-SECRET-4711"


# ---------------------------------------------------------------- fixtures made here


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, so it can be 16-bit RGB (Pillow cannot) or claim any size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _dicom(stored: np.ndarray, *, preamble: bool = True, **attributes) -> bytes:
    """A gray CT DICOM holding ``stored`` ((rows, cols) or (frames, rows, cols)); None deletes an attribute."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.set_pixel_data(stored, "MONOCHROME2", stored.dtype.itemsize * 8)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.Modality = "CT"
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    if not preamble:
        dataset.file_meta = FileMetaDataset()
    dataset.save_as(buffer, implicit_vr=not preamble, little_endian=True, enforce_file_format=preamble)
    return buffer.getvalue()


def _hu_dataset(**attributes) -> bytes:
    """Stored [1000, 1034, 1044, 1054, 1124] with slope 2, intercept -2048: HU [-48, 20, 40, 60, 200]."""
    stored = np.array([[1000, 1034, 1044, 1054, 1124]], np.uint16)
    return _dicom(stored, RescaleSlope=2, RescaleIntercept=-2048, **attributes)


def _identified_dataset() -> bytes:
    private_creator_and_value = {0x00110010: ("LO", "ACME EXAMPLE"), 0x00111001: ("LO", PRIVATE_SECRET)}
    data = _dicom(np.arange(12, dtype=np.uint16).reshape(3, 4) * 100, **IDENTIFIERS)
    dataset = pydicom.dcmread(io.BytesIO(data))
    for tag, (vr, value) in private_creator_and_value.items():
        dataset.add_new(tag, vr, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _bundled(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


# ---------------------------------------------------------------- Pillow formats


def test_png_8bit_gray_is_exact():
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = read_image(_encode(Image.fromarray(stored), "PNG"))
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (16, 16)
    np.testing.assert_array_equal(image.pixels, stored / np.float32(255))
    assert image.bit_depth == 8 and image.warnings == () and image.dicom is None


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_gray_scaled_by_65535_not_clipped(fmt):
    stored = np.array([[0, 1, 256, 4095], [30000, 65534, 65535, 12345]], np.uint16)
    image = read_image(_encode(Image.fromarray(stored), fmt))
    assert image.bit_depth == 16
    np.testing.assert_array_equal(np.rint(image.pixels.astype(np.float64) * 65535), stored)


@pytest.mark.parametrize("fmt, options", [("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("GIF", {})])
def test_lossless_rgb_formats_round_trip(fmt, options):
    rgb = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 3).astype(np.uint8)
    image = read_image(_encode(Image.fromarray(rgb), fmt, **options))
    if fmt == "GIF":  # palette-quantised: only the shape and colour-ness are guaranteed
        assert image.pixels.shape == (4, 6, 3)
        return
    np.testing.assert_array_equal(to_uint8(image.pixels), rgb)


def test_rgba_drops_alpha_with_warning():
    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 17
    image = read_image(_encode(Image.fromarray(rgba), "PNG"))
    assert image.pixels.shape == (3, 5, 3)
    assert np.all(to_uint8(image.pixels)[..., 0] == 200) and not image.pixels[..., 1:].any()
    assert any("alpha" in w for w in image.warnings)


def test_la_becomes_gray_without_alpha():
    la = np.dstack([np.full((4, 4), 90, np.uint8), np.full((4, 4), 3, np.uint8)])
    image = read_image(_encode(Image.fromarray(la, "LA"), "PNG"))
    assert image.pixels.shape == (4, 4) and np.all(to_uint8(image.pixels) == 90)
    assert any("alpha" in w for w in image.warnings)


@pytest.mark.parametrize("gray, shape", [(True, (2, 3)), (False, (2, 3, 3))])
def test_palette_becomes_gray_or_rgb(gray, shape):
    colours = [(v, v, v) if gray else (v, 255 - v, 7) for v in (0, 80, 160, 240)]
    img = Image.fromarray(np.array([[0, 1, 2], [3, 2, 1]], np.uint8), "P")
    img.putpalette([c for colour in colours for c in colour])
    image = read_image(_encode(img, "PNG"))
    assert image.pixels.shape == shape
    expected = np.array([[colours[i] for i in row] for row in ([0, 1, 2], [3, 2, 1])], np.uint8)
    np.testing.assert_array_equal(to_uint8(image.pixels), expected[..., 0] if gray else expected)


def test_exif_orientation_applied():
    stored = np.zeros((16, 32), np.uint8)
    stored[:, :16] = 255  # left half white as stored; orientation 6 displays it rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    image = read_image(_encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert image.pixels.shape == (32, 16)
    assert image.pixels[:16].mean() > 0.9 and image.pixels[16:].mean() < 0.1  # white on top


def test_16bit_rgb_png_read_at_8_bits_with_warning():
    rgb = np.array([[[65535, 0, 32896], [257, 65535, 0]]], np.uint16)
    rows = b"\x00" + rgb.astype(">u2").tobytes()
    image = read_image(_png(2, 1, 16, 2, rows))
    assert image.pixels.shape == (1, 2, 3)
    np.testing.assert_allclose(image.pixels, rgb / 65535, atol=1 / 255)
    assert any("16-bit" in w for w in image.warnings)


def test_multi_frame_tiff_frame_index():
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20, 30)]
    data = _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert np.all(to_uint8(read_image(data, frame=2).pixels) == 30)


@pytest.mark.parametrize("fmt", ["TIFF", "GIF"])
def test_a_multi_frame_file_says_which_frame_was_read(fmt):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20, 30)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    first, last = read_image(data), read_image(data, frame=2)
    assert np.all(to_uint8(first.pixels) == 10) and np.all(to_uint8(last.pixels) == 30)
    assert first.frames == last.frames == 3
    assert first.warnings == (f"the {fmt} file holds 3 frames; frame 0 (counting from 0) was read",)
    assert last.warnings == (f"the {fmt} file holds 3 frames; frame 2 (counting from 0) was read",)
    single = read_image(_encode(frames[0], fmt))
    assert single.frames == 1 and single.warnings == ()


def test_a_pair_names_the_source_of_each_reading_warning():
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 20)]
    pair = read_pair(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
                     _encode(Image.fromarray(np.zeros((4, 4), np.uint8)), "PNG"), on_size_mismatch="resample")
    assert pair.every_warning == ("A: the GIF file holds 2 frames; frame 0 (counting from 0) was read",
                                  "B resized from 4 x 4 to 8 x 8 (height x width, bicubic) to match A")


def test_path_and_bytes_give_the_same_pixels(tmp_path):
    data = _encode(Image.fromarray(texture((8, 9)).round().astype(np.uint8) * 255), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image(path).pixels, read_image(str(path)).pixels)
    np.testing.assert_array_equal(read_image(path).pixels, read_image(data).pixels)


# ---------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "array, expected, bits",
    [
        (np.array([[0, 51, 255]], np.uint8), [[0.0, 0.2, 1.0]], 8),
        (np.array([[0, 13107, 65535]], np.uint16), [[0.0, 0.2, 1.0]], 16),
        (np.array([[False, True, True]]), [[0.0, 1.0, 1.0]], 1),
        (np.array([[0.0, 0.25, 1.0]], np.float64), [[0.0, 0.25, 1.0]], 64),
        (np.array([[[0.0], [0.5], [1.0]]], np.float32), [[0.0, 0.5, 1.0]], 32),
    ],
)
def test_array_scaling(array, expected, bits):
    image = read_image(array)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-7)
    assert image.pixels.dtype == np.float32 and image.bit_depth == bits and image.warnings == ()


def test_float_array_outside_unit_range_is_stretched_with_warning():
    image = read_image(np.array([[-100.0, 0.0, 300.0]]))
    np.testing.assert_allclose(image.pixels, [[0.0, 0.25, 1.0]])
    assert any("stretched" in w for w in image.warnings)


def test_rgba_array_drops_alpha_and_gray_rgb_stays_rgb():
    rgba = np.dstack([np.full((2, 2), 0.5, np.float32)] * 3 + [np.zeros((2, 2), np.float32)])
    image = read_image(rgba)
    assert image.pixels.shape == (2, 2, 3) and any("alpha" in w for w in image.warnings)


def test_array_is_copied():
    array = np.zeros((2, 2), np.float32)
    image = read_image(array)
    array[0, 0] = 1.0
    assert image.pixels[0, 0] == 0.0


# ---------------------------------------------------------------- DICOM, made here


def test_rescale_then_stored_window_exact():
    # HU [-48, 20, 40, 60, 200]; window W 81 / L 40 (first of two): (x - 39.5) / 80 + 0.5, clipped
    image = read_image(_hu_dataset(WindowCenter=[40, 300], WindowWidth=[81, 1500]))
    np.testing.assert_allclose(image.pixels, [[0.0, 0.25625, 0.50625, 0.75625, 1.0]], atol=1e-6)
    assert image.dicom.window == (81.0, 40.0) and image.dicom.window_source == "stored"
    assert image.bit_depth == 16


def test_preset_and_explicit_window_replace_the_stored_one():
    data = _hu_dataset(WindowCenter=300, WindowWidth=1500)
    brain = read_image(data, window="brain")  # W 80 / L 40: (x - 39.5) / 79 + 0.5
    expected = [0.0, (20 - 39.5) / 79 + 0.5, (40 - 39.5) / 79 + 0.5, (60 - 39.5) / 79 + 0.5, 1.0]
    np.testing.assert_allclose(brain.pixels, [expected], atol=1e-6)
    explicit = read_image(data, window=(201, 100))  # (x - 99.5) / 200 + 0.5
    expected = [0.0, (20 - 99.5) / 200 + 0.5, (40 - 99.5) / 200 + 0.5, (60 - 99.5) / 200 + 0.5, 1.0]
    np.testing.assert_allclose(explicit.pixels, [expected], atol=1e-6)
    assert explicit.dicom.window_source == "explicit" and WINDOW_PRESETS["lung"] == (1500, -600)


def test_full_range_option_ignores_the_stored_window():
    image = read_image(_hu_dataset(WindowCenter=40, WindowWidth=81), window="full")  # HU -48..200 -> 0..1
    np.testing.assert_allclose(image.pixels, [[0.0, 68 / 248, 88 / 248, 108 / 248, 1.0]], atol=1e-6)
    assert image.dicom.window_source == "full range"


def test_full_range_without_stored_window_and_monochrome1_inverted():
    plain = read_image(_hu_dataset())
    expected = np.array([[-48, 20, 40, 60, 200]]) + 48.0
    np.testing.assert_allclose(plain.pixels, expected / 248, atol=1e-6)
    assert plain.dicom.window_source == "full range" and plain.dicom.window == (248.0, 76.0)
    inverted = read_image(_hu_dataset(PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(inverted.pixels, 1 - expected / 248, atol=1e-6)


def test_signed_stored_values():
    stored = np.array([[-1000, 0, 1000]], np.int16)
    image = read_image(_dicom(stored, WindowCenter=0, WindowWidth=2001))  # (x + 0.5) / 2000 + 0.5
    np.testing.assert_allclose(image.pixels, [[-999.5 / 2000 + 0.5, 0.5 / 2000 + 0.5, 1.0]], atol=1e-6)


def test_multi_frame_index_and_range(tmp_path):
    stored = np.stack([np.full((2, 3), v, np.uint16) for v in (0, 100, 300)])
    path = tmp_path / "frames.dcm"
    path.write_bytes(_dicom(stored, WindowCenter=100, WindowWidth=201))  # (x - 99.5) / 200 + 0.5
    np.testing.assert_allclose(read_image(path, frame=1).pixels, 0.5 / 200 + 0.5, atol=1e-6)
    assert np.all(read_image(path, frame=2).pixels == 1.0) and read_image(path).dicom.frames == 3
    assert "the DICOM file holds 3 frames; frame 1 (counting from 0) was read" in read_image(path, frame=1).warnings
    with pytest.raises(ImageLoadError, match=r"0\.\.2"):
        read_image(path, frame=3)


def test_dicom_detected_by_content_not_extension(tmp_path):
    stored = np.array([[0, 50, 100]], np.uint16)
    path = tmp_path / "looks_like.png"
    path.write_bytes(_dicom(stored))
    np.testing.assert_allclose(read_image(path).pixels, [[0.0, 0.5, 1.0]])
    headerless = _dicom(stored, preamble=False)
    assert headerless[128:132] != b"DICM"
    np.testing.assert_allclose(read_image(headerless).pixels, [[0.0, 0.5, 1.0]])


def test_summary_and_secondary_capture_carry_no_identifiers(tmp_path):
    data = _identified_dataset()
    assert all(value.encode() in data for value in IDENTIFIERS.values()) and PRIVATE_SECRET.encode() in data
    image = read_image(data)
    summary = image.dicom
    text = repr(summary) + repr(summary.as_dict()) + repr(image.warnings)
    for secret in [*IDENTIFIERS.values(), PRIVATE_SECRET, "Doe", "Jane", "99887766", "1961"]:
        assert secret not in text
    assert summary.modality == "CT" and (summary.rows, summary.columns) == (3, 4)

    path = tmp_path / "fused.dcm"
    write_dicom_secondary_capture(path, image.pixels, modality_hint="ct")
    raw = path.read_bytes()
    exported = pydicom.dcmread(path)
    values = " ".join(str(e.value) for e in [*exported.file_meta, *exported.iterall()] if e.tag != 0x7FE00010)
    for secret in [*IDENTIFIERS.values(), PRIVATE_SECRET, "Doe", "99887766", "19610203", "Example"]:
        assert secret not in values and secret.encode() not in raw
    assert not any(element.tag.is_private for element in exported.iterall())
    assert exported.Modality == "CT" and str(exported.PatientName) == "Anonymous"


# ---------------------------------------------------------------- DICOM, bundled with pydicom


def test_bundled_ct_and_mr_read_as_described():
    ct = read_image(_bundled("CT_small.dcm"))
    assert ct.pixels.shape == (128, 128) and ct.dicom.modality == "CT"
    assert ct.pixels.min() == 0.0 and ct.pixels.max() == 1.0 and ct.dicom.window_source == "full range"
    assert ct.dicom.pixel_spacing is not None
    mr_path = _bundled("MR_small.dcm")
    mr = read_image(mr_path)
    assert mr.dicom.window == (1600.0, 600.0) and mr.dicom.window_source == "stored"
    stored = pydicom.dcmread(mr_path).pixel_array.astype(np.float64)  # MR_small has no rescale
    expected = np.clip((stored - 599.5) / 1599 + 0.5, 0, 1)
    np.testing.assert_allclose(mr.pixels, expected, atol=1e-6)


def test_bundled_rle_compressed_matches_uncompressed():
    plain, rle = read_image(_bundled("MR_small.dcm")), read_image(_bundled("MR_small_RLE.dcm"))
    np.testing.assert_array_equal(plain.pixels, rle.pixels)
    assert rle.dicom.transfer_syntax == "RLE Lossless"


def test_bundled_rgb_multi_frame_and_ybr():
    path = _bundled("SC_rgb_rle_2frame.dcm")
    frame = read_image(path, frame=1)
    assert frame.pixels.shape == (100, 100, 3) and frame.dicom.frames == 2
    with pytest.raises(ImageLoadError, match=r"0\.\.1"):
        read_image(path, frame=2)
    rgb = read_image(_bundled("SC_rgb_rle.dcm")).pixels
    ybr = read_image(_bundled("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr.dicom.photometric == "YBR_FULL_422"
    assert np.abs(ybr.pixels - rgb).max() < 0.03  # converted to RGB, up to YCbCr rounding


def test_bundled_jpeg_baseline_decoded_through_installed_plugin():
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG baseline decoder installed")
    jpeg = read_image(_bundled("SC_rgb_jpeg_dcmtk.dcm")).pixels
    assert np.abs(jpeg - read_image(_bundled("SC_rgb_rle.dcm")).pixels).max() < 0.05


def test_bundled_palette_becomes_rgb():
    image = read_image(_bundled("examples_palette.dcm"))
    assert image.pixels.shape == (350, 800, 3) and image.dicom.photometric == "PALETTE COLOR"


def test_missing_decoder_says_what_to_install():
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(ImageLoadError, match="decoder") as caught:
        read_image(_bundled("MR_small_jpeg_ls_lossless.dcm"))
    assert "install" in str(caught.value) and type(caught.value) is ImageLoadError


# ---------------------------------------------------------------- bad inputs


def _file(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    return tmp_path / "folder"


_PNG = _encode(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1))), "PNG")
_JPEG = _encode(Image.fromarray((texture((64, 64)) * 255).astype(np.uint8)), "JPEG")
BAD_INPUTS = {  # name -> (source made in tmp_path, read options, word the message must contain)
    "empty file": (lambda tmp: _file(tmp, "empty.png", b""), {}, "empty"),
    "truncated png": (lambda tmp: _PNG[: len(_PNG) // 2], {}, "decode"),
    "truncated jpeg": (lambda tmp: _JPEG[: len(_JPEG) // 2], {}, "decode"),
    "text renamed png": (lambda tmp: _file(tmp, "notes.png", b"not an image\n" * 20), {}, "not a recognised"),
    "dicom without pixel data": (lambda tmp: _hu_dataset(PixelData=None), {}, "no pixel data"),
    "dicom wrong pixel length": (lambda tmp: _hu_dataset(PixelData=b"\x00\x01" * 3), {}, "pixel data"),
    "zero-size array": (lambda tmp: np.zeros((0, 5), np.uint8), {}, "empty"),
    "zero-size rgb array": (lambda tmp: np.zeros((4, 0, 3), np.float32), {}, "empty"),
    "bomb header": (lambda tmp: _png(100_000, 100_000, 8, 0, b"\x00"), {}, "decompression bomb"),
    "over max_pixels": (lambda tmp: _PNG, {"max_pixels": 1000}, "max_pixels"),
    "4-D array": (lambda tmp: np.zeros((2, 2, 2, 2), np.uint8), {}, "shape"),
    "5 channels": (lambda tmp: np.zeros((2, 2, 5), np.uint8), {}, "shape"),
    "NaN array": (lambda tmp: np.array([[0.0, np.nan]]), {}, "NaN"),
    "inf array": (lambda tmp: np.array([[0.0, np.inf]]), {}, "infinite"),
    "nonexistent path": (lambda tmp: tmp / "missing.png", {}, "not found"),
    "directory": (_folder, {}, "directory"),
    "dicom frame out of range": (lambda tmp: _hu_dataset(), {"frame": 1}, "out of range"),
    "png frame out of range": (lambda tmp: _PNG, {"frame": -1}, "out of range"),
    "complex dtype": (lambda tmp: np.zeros((2, 2), np.complex64), {}, "dtype"),
    "object array": (lambda tmp: np.array([[object(), None]]), {}, "dtype"),
    "int32 array": (lambda tmp: np.zeros((2, 2), np.int32), {}, "dtype"),
    "unknown preset": (lambda tmp: _hu_dataset(), {"window": "liver"}, "preset"),
    "window width 0": (lambda tmp: _hu_dataset(), {"window": (0, 40)}, "width"),
    "list source": (lambda tmp: [[0, 1]], {}, "numpy array"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_image_load_error(tmp_path, name):
    make_source, options, word = BAD_INPUTS[name]
    with pytest.raises(ImageLoadError) as caught:
        read_image(make_source(tmp_path), **options)
    assert type(caught.value) in (ImageLoadError, ImageTooLargeError)  # not a wrapped library error
    assert word.lower() in str(caught.value).lower()


@pytest.mark.parametrize("side", [40, 100])  # 40^2 trips Pillow's warning, 100^2 its error (> 2x limit)
def test_pillow_decompression_bomb_guard_becomes_image_load_error(monkeypatch, side):
    data = _encode(Image.fromarray(np.zeros((side, side), np.uint8)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        read_image(data)

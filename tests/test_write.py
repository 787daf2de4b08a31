"""fusion_core.imaging.write: 8-bit PNG, 16-bit TIFF, DICOM Secondary Capture and fused results."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from fusion_core.color import replace_luma
from fusion_core.imaging import (
    fused_format,
    fused_pixels,
    read_image,
    to_uint8,
    write_dicom_secondary_capture,
    write_fused,
    write_png,
    write_tiff16,
)


def test_to_uint8_rounds_and_clips():
    values = np.array([0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.2, -0.1])
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 1, 255, 255, 0])
    with pytest.raises(ValueError):
        to_uint8(np.array([np.nan]))


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_png_round_trip_exact(tmp_path, shape):
    stored = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    write_png(tmp_path / "out.png", stored)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), stored)
    write_png(tmp_path / "float.png", stored / 255.0)
    np.testing.assert_array_equal(to_uint8(read_image(tmp_path / "float.png").pixels), stored)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_tiff16_round_trip(tmp_path, shape):
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 65536, shape, dtype=np.uint16)
    write_tiff16(tmp_path / "out.tif", stored)
    image = read_image(tmp_path / "out.tif")
    assert image.bit_depth == 16 and image.warnings == ()
    np.testing.assert_array_equal(np.rint(image.pixels.astype(np.float64) * 65535), stored)
    eight_bit = np.asarray(Image.open(tmp_path / "out.tif"))  # Pillow itself parses the file too
    np.testing.assert_array_equal(eight_bit if len(shape) == 3 else eight_bit >> 8, stored >> 8)
    floats = rng.random(shape)
    write_tiff16(tmp_path / "float.tif", floats)
    assert np.abs(read_image(tmp_path / "float.tif").pixels - floats).max() <= 0.5 / 65535 + 1e-7


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 3)])
def test_secondary_capture_round_trip(tmp_path, shape):
    stored = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "sc.dcm"
    write_dicom_secondary_capture(path, stored)
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert list(dataset.ImageType) == ["DERIVED", "SECONDARY"]
    assert dataset.PhotometricInterpretation == ("RGB" if len(shape) == 3 else "MONOCHROME2")
    assert dataset.Modality == "OT" and dataset.PatientID == "ANONYMOUS"
    np.testing.assert_array_equal(dataset.pixel_array, stored)
    np.testing.assert_array_equal(to_uint8(read_image(path).pixels), stored)


def test_writers_refuse_bad_images(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_png(tmp_path / "x.png", np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="modality"):
        write_dicom_secondary_capture(tmp_path / "x.dcm", np.zeros((2, 2)), modality_hint="not a code!")


def _fused_luminance(shape: tuple[int, int]) -> np.ndarray:
    """A smooth (H, W) float32 luminance in (0, 1) that takes many more than 256 values."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.float32)


def test_fused_pixels_give_b_colour_and_round_to_the_pipeline_image():
    rng = np.random.default_rng(4)
    b = rng.random((12, 16, 3)).astype(np.float32)
    y = _fused_luminance((12, 16))
    rgb = fused_pixels(y, b)
    assert rgb.shape == (12, 16, 3) and rgb.min() >= 0 and rgb.max() <= 1
    inside = (rgb > 0).all(axis=2) & (rgb < 1).all(axis=2)  # clipping changes Y where a channel saturates
    np.testing.assert_allclose((rgb @ [0.299, 0.587, 0.114])[inside], y[inside], atol=1e-6)
    # the pipeline's 8-bit rule: RGB(Y_F, Cb_B, Cr_B) * 255, rounded, clipped (FusionPipeline.fuse)
    expected = np.clip(np.rint(replace_luma(b, y) * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(rgb), expected)
    np.testing.assert_array_equal(fused_pixels(y, (b * 255).round().astype(np.uint8)),
                                  fused_pixels(y, ((b * 255).round() / 255).astype(np.float32)))
    np.testing.assert_array_equal(fused_pixels(y, b[..., :1]), y)  # a gray B: the luminance itself


def test_write_fused_tiff_keeps_the_luminance_precision(tmp_path):
    rng = np.random.default_rng(5)
    b = rng.random((40, 48, 3)).astype(np.float32)
    y = _fused_luminance((40, 48))
    write_fused(tmp_path / "fused.TIFF", y, b)
    stored = np.rint(read_image(tmp_path / "fused.TIFF").pixels.astype(np.float64) * 65535)
    np.testing.assert_array_equal(stored, np.rint(fused_pixels(y, b) * 65535))
    assert len(np.unique(stored)) > 4096 and np.any(stored % 257)  # not 8-bit values scaled by 257


@pytest.mark.parametrize("name", ["fused.png", "fused.dcm"])
def test_write_fused_8bit_formats_hold_the_rounded_image(tmp_path, name):
    b = np.random.default_rng(6).random((18, 20, 3)).astype(np.float32)
    y = _fused_luminance((18, 20))
    write_fused(tmp_path / name, y, b)
    np.testing.assert_array_equal(to_uint8(read_image(tmp_path / name).pixels), to_uint8(fused_pixels(y, b)))


def test_write_fused_refuses_other_names_and_shapes(tmp_path):
    y = _fused_luminance((6, 8))
    for name in ("fused.jpg", "fused"):
        with pytest.raises(ValueError, match=r"\.png, \.tif or \.tiff \(16-bit\) or \.dcm"):
            write_fused(tmp_path / name, y, np.zeros((6, 8, 3), np.float32))
        assert not (tmp_path / name).exists()
    assert fused_format("x.Tif") == "tiff" and fused_format("x.DCM") == "dicom"
    with pytest.raises(ValueError, match="B is"):
        write_fused(tmp_path / "x.png", y, np.zeros((6, 9, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_fused(tmp_path / "x.png", np.stack([y] * 3, axis=-1), np.zeros((6, 8, 3), np.float32))

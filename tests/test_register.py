"""fusion_core.imaging.register: pairs read together, their sizes matched and their shift corrected."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import texture
from fusion_core.imaging import (
    ImageLoadError,
    estimate_shift,
    read_pair,
    shift_image,
)


def test_pair_shifted_by_7_and_minus_12_is_realigned():
    base = texture((160, 160), seed=3)
    a = base[16:144, 16:144]
    b = base[16 - 7 : 144 - 7, 16 + 12 : 144 + 12]  # b(y, x) = a(y - 7, x + 12): content moved by (7, -12)
    pair = read_pair(a, b, align=True)
    assert pair.shift is not None
    assert abs(pair.shift[0] + 7) < 1 and abs(pair.shift[1] - 12) < 1
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(pair.b.pixels[inner] - a[inner]).mean() < 0.1 * np.abs(b[inner] - a[inner]).mean()
    assert any("shifted" in w for w in pair.warnings)


def test_estimate_shift_sub_pixel_and_shift_image_edges():
    image = texture((96, 96), seed=5)
    moved = shift_image(image, (2.5, -3.25))
    dy, dx = estimate_shift(moved, image)
    assert abs(dy - 2.5) < 0.2 and abs(dx + 3.25) < 0.2
    ramp = np.arange(5, dtype=np.float32)[None, :].repeat(3, axis=0)
    np.testing.assert_array_equal(shift_image(ramp, (0, 2))[0], [0, 0, 0, 1, 2])  # edge repeated
    np.testing.assert_array_equal(shift_image(ramp, (0, -1))[0], [1, 2, 3, 4, 4])


def test_size_mismatch_refused_by_default():
    with pytest.raises(ImageLoadError) as caught:
        read_pair(np.zeros((32, 32), np.uint8), np.zeros((16, 24), np.uint8))
    message = str(caught.value)
    assert "32 x 32" in message and "16 x 24" in message and "resample" in message


def test_size_mismatch_resampled_with_warning():
    b = np.full((16, 24, 3), 0.5, np.float32)
    pair = read_pair(np.zeros((32, 32), np.uint8), b, on_size_mismatch="resample")
    assert pair.b.pixels.shape == (32, 32, 3) and pair.shift is None
    np.testing.assert_allclose(pair.b.pixels, 0.5, atol=1e-6)
    assert any("resized" in w and "16 x 24" in w for w in pair.warnings)


def test_pair_errors_name_the_image_and_options():
    with pytest.raises(ImageLoadError, match="image B"):
        read_pair(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.complex64))
    with pytest.raises(ImageLoadError, match="read option"):
        read_pair(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), colour="red")

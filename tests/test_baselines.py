"""Classical baselines: shapes at odd sizes, colour handling, identities, what each rule keeps, bad input."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from fusion_core import baselines as bl
from fusion_core.color import luma, rgb_to_ycbcr


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _muted_colour(rng: np.random.Generator, shape) -> np.ndarray:
    """RGB in [0.3, 0.7] with little saturation, so a new luminance keeps it inside the RGB cube."""
    gray = rng.uniform(0.4, 0.6, shape)[..., None]
    return np.clip(gray + rng.uniform(-0.05, 0.05, (*shape, 3)), 0, 1)


def test_registry_names():
    assert set(bl.BASELINES) == {"average", "max", "laplacian", "guided_filter"}


@pytest.mark.parametrize("name", sorted(bl.BASELINES))
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (13, 9), (33, 47)])
def test_output_has_shape_of_b_in_unit_range(name, shape, rng):
    a = rng.uniform(0, 1, shape)
    for b in (rng.uniform(0, 1, shape), rng.uniform(0, 1, (*shape, 3))):
        fused = bl.BASELINES[name](a, b)
        assert fused.shape == b.shape
        assert fused.dtype == np.float64
        assert np.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1


@pytest.mark.parametrize("name", sorted(bl.BASELINES))
def test_colour_b_keeps_its_chroma(name, rng):
    shape = (21, 19)
    a = rng.uniform(0.35, 0.65, shape)
    b = _muted_colour(rng, shape)
    fused = bl.BASELINES[name](a, b)
    # Exact in float (no clipping happens with these colours) ...
    np.testing.assert_allclose(rgb_to_ycbcr(fused)[..., 1:], rgb_to_ycbcr(b)[..., 1:], atol=1e-12)
    # ... and within 1/255 after rounding to 8 bits.
    fused_8bit = np.rint(fused * 255) / 255
    assert np.abs(rgb_to_ycbcr(fused_8bit)[..., 1:] - rgb_to_ycbcr(b)[..., 1:]).max() <= 1 / 255


def test_luminance_of_colour_result_is_the_rule_applied_to_lumas(rng):
    shape = (16, 16)
    a, b = rng.uniform(0.35, 0.65, shape), _muted_colour(rng, shape)
    np.testing.assert_allclose(luma(bl.fuse_average(a, b)), (a + luma(b)) / 2, atol=1e-12)
    np.testing.assert_allclose(luma(bl.fuse_maximum(a, b)), np.maximum(a, luma(b)), atol=1e-12)


@pytest.mark.parametrize("name", sorted(bl.BASELINES))
def test_identical_inputs_are_returned_unchanged(name, rng):
    image = rng.uniform(0, 1, (29, 35))
    np.testing.assert_allclose(bl.BASELINES[name](image, image), image, atol=1e-9)


def test_maximum_is_at_least_both_sources(rng):
    a, b = rng.uniform(0, 1, (9, 11)), rng.uniform(0, 1, (9, 11))
    fused = bl.fuse_maximum(a, b)
    assert (fused >= a).all() and (fused >= b).all()
    assert ((fused == a) | (fused == b)).all()


def test_laplacian_pyramid_reconstructs_exactly_at_odd_sizes(rng):
    image = rng.uniform(0, 1, (37, 23))
    pyramid = bl.laplacian_pyramid(image, 3)
    assert [level.shape for level in pyramid] == [(37, 23), (19, 12), (10, 6), (5, 3)]
    np.testing.assert_allclose(bl.collapse_pyramid(pyramid), image, atol=1e-12)


def test_laplacian_fusion_keeps_the_stronger_detail():
    # A is flat; B is flat plus a fine checkerboard of +-0.1. Averaging halves the checkerboard; taking the
    # larger detail at the fine levels keeps (most of) it, while the base is the common 0.5.
    a = np.full((32, 32), 0.5)
    checker = 0.1 * (np.indices((32, 32)).sum(axis=0) % 2 * 2 - 1)
    b = 0.5 + checker
    fused = bl.fuse_laplacian(a, b)
    assert np.std(fused) > 0.08
    assert np.std(bl.fuse_average(a, b)) == pytest.approx(0.05, abs=1e-12)


def test_guided_filter_fusion_takes_the_salient_source(rng):
    # A has texture everywhere and B is flat: A is the more salient everywhere, so P_A = 1 and P_B = 0,
    # the guided filter of a constant map is that constant, and the result is A itself.
    a = 0.5 + 0.2 * rng.uniform(-1, 1, (40, 40))
    b = np.full((40, 40), 0.5)
    np.testing.assert_allclose(bl.fuse_guided_filter(a, b), a, atol=1e-6)


def test_guided_filter_preserves_a_constant_input_and_smooths_noise(rng):
    guide = rng.uniform(0, 1, (30, 30))
    np.testing.assert_allclose(bl.guided_filter(guide, np.full((30, 30), 0.25), 4, 0.01), 0.25, atol=1e-12)
    noise = rng.uniform(0, 1, (30, 30))
    assert np.std(bl.guided_filter(np.full((30, 30), 0.5), noise, 3, 0.1)) < 0.5 * np.std(noise)


def test_uint8_inputs_equal_float_inputs(rng):
    a = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    b = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    np.testing.assert_allclose(bl.fuse_laplacian(a, b), bl.fuse_laplacian(a / 255, b / 255), atol=1e-12)


def test_colour_a_is_reduced_to_luma(rng):
    a_rgb, b = rng.uniform(0, 1, (8, 8, 3)), rng.uniform(0, 1, (8, 8))
    np.testing.assert_allclose(bl.fuse_average(a_rgb, b), np.clip((luma(a_rgb) + b) / 2, 0, 1), atol=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((8, 8)), np.zeros((8, 9)), "same height and width"),
        (np.full((8, 8), np.nan), np.zeros((8, 8)), "NaN"),
        (np.full((8, 8), 200.0), np.zeros((8, 8)), r"\[0, 1\]"),
        (np.zeros((8, 8)), np.zeros((8, 8, 4)), r"gray \(H, W\) or RGB"),
        (np.zeros(8), np.zeros(8), r"gray \(H, W\) or RGB"),
        (np.zeros((0, 8)), np.zeros((0, 8)), "empty"),
        (np.zeros((8, 8), dtype=np.int32), np.zeros((8, 8)), "dtype"),
    ],
)
def test_bad_input_raises_value_error(a, b, message):
    for fuse in bl.BASELINES.values():
        with pytest.raises(ValueError, match=message):
            fuse(a, b)


def test_baselines_module_imports_no_torch():
    tree = ast.parse(Path(bl.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "torch" for name in imported)

"""Metrics: hand-computed values pinned per metric, properties (symmetry, invariances), bad input."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from fusion_core import metrics as m
from fusion_core.color import luma


def _texture(rng: np.random.Generator, shape=(32, 40), low=0.0, high=255.0) -> np.ndarray:
    """Smooth-ish random image (noise plus a ramp) so that every metric has structure to see."""
    ramp = np.linspace(0, 1, shape[1])[None, :] * np.linspace(0.5, 1, shape[0])[:, None]
    image = 0.6 * ramp + 0.4 * rng.uniform(0, 1, shape)
    return low + (high - low) * image


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def triple(rng):
    a = _texture(rng)
    b = _texture(rng)[:, ::-1].copy()
    return np.rint((a + b) / 2), np.rint(a), np.rint(b)


# ------------------------------------------------------------------------------------------- EN, SD, SF, AG


def test_constant_image_has_no_information_or_detail():
    flat = np.full((20, 20), 77, dtype=np.uint8)
    assert m.entropy(flat) == 0.0
    assert m.spatial_frequency(flat) == 0.0
    assert m.standard_deviation(flat) == 0.0
    assert m.average_gradient(flat) == 0.0


def test_entropy_of_equally_frequent_levels():
    # Two levels, half the pixels each: EN = -2 * 0.5 log2 0.5 = 1 bit. Four levels: 2 bits.
    two = np.zeros((8, 8), dtype=np.uint8)
    two[:, 4:] = 255
    assert m.entropy(two) == pytest.approx(1.0, abs=1e-12)
    four = np.tile(np.array([0, 10, 20, 30], dtype=np.uint8), (8, 2))
    assert m.entropy(four) == pytest.approx(2.0, abs=1e-12)
    # p = (3/4, 1/4): EN = -(0.75 log2 0.75 + 0.25 log2 0.25) = 0.811278...
    skew = np.zeros((4, 4), dtype=np.uint8)
    skew[0] = 9
    assert m.entropy(skew) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)), abs=1e-12)


def test_entropy_rounds_floats_to_levels():
    # 10.4 -> level 10 and 10.6 -> level 11: two equally frequent levels, 1 bit.
    image = np.array([[10.4, 10.6], [10.4, 10.6]])
    assert m.entropy(image) == pytest.approx(1.0, abs=1e-12)


def test_standard_deviation_of_two_levels():
    # Half 0, half 255: mean 127.5, every deviation 127.5.
    image = np.zeros((6, 6))
    image[:3] = 255
    assert m.standard_deviation(image) == pytest.approx(127.5, abs=1e-12)


def test_spatial_frequency_of_stripes_and_ramp():
    # Vertical stripes 0, 10, 0, 10: every horizontal difference is +-10 (RF = 10), vertical ones 0 (CF = 0).
    stripes = np.tile(np.array([0.0, 10.0]), (5, 4))
    assert m.spatial_frequency(stripes) == pytest.approx(10.0, abs=1e-12)
    # F(i, j) = 2 i + 3 j: RF = 3, CF = 2, SF = sqrt(13).
    i, j = np.mgrid[0:6, 0:7]
    assert m.spatial_frequency(2.0 * i + 3.0 * j) == pytest.approx(math.sqrt(13), abs=1e-12)


def test_average_gradient_of_ramp():
    # F(i, j) = 3 j: Gx = 3 everywhere (central and one-sided differences agree), Gy = 0: AG = 3 / sqrt 2.
    ramp = 3.0 * np.mgrid[0:5, 0:8][1]
    assert m.average_gradient(ramp) == pytest.approx(3 / math.sqrt(2), abs=1e-12)


# ------------------------------------------------------------------------------------------------------- MI


def test_mutual_information_on_known_joint_histogram():
    # Joint p(f, a) = [[3/8, 1/8], [1/8, 3/8]], marginals 1/2: MI = 2 (3/8) log2(3/2) + 2 (1/8) log2(1/2)
    # = 0.75 log2 1.5 - 0.25 = 0.188722 bits. B is constant, so MI(F, B) = 0 and MI = MI(F, A).
    f = np.array([[0, 0, 0, 0, 200, 200, 200, 200]], dtype=np.uint8)
    a = np.array([[0, 0, 0, 200, 200, 200, 200, 0]], dtype=np.uint8)
    b = np.full_like(f, 50)
    expected_bits = 0.75 * math.log2(1.5) - 0.25
    assert m.mutual_information(f, a, b) == pytest.approx(expected_bits, abs=1e-12)
    assert m.mutual_information(f, a, b, log_base=math.e) == pytest.approx(expected_bits * math.log(2), abs=1e-12)


def test_mutual_information_of_copies_and_independent_images():
    two = np.zeros((4, 4), dtype=np.uint8)
    two[:, 2:] = 255
    # MI(F, F) = H(F) = 1 bit, summed over two identical sources: 2 bits.
    assert m.mutual_information(two, two, two) == pytest.approx(2.0, abs=1e-12)
    # F varies along columns, A along rows: every (f, a) cell has probability 1/4 = p(f) p(a): MI = 0.
    assert m.mutual_information(two, two.T.copy(), two.T.copy()) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_images_is_one(triple):
    f, a, _ = triple
    assert m.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert m.ssim_fusion(a, a, a) == pytest.approx(1.0, abs=1e-12)
    assert m.ssim_fusion(a, a, a, reduction="sum") == pytest.approx(2.0, abs=1e-12)


def test_ssim_of_constant_images():
    # Zero variances: SSIM = (2 x y + C1) / (x^2 + y^2 + C1) * C2 / C2, C1 = (0.01 * 255)^2 = 6.5025.
    x, y = np.full((9, 9), 100.0), np.full((9, 9), 150.0)
    expected = (2 * 100 * 150 + 6.5025) / (100**2 + 150**2 + 6.5025)
    assert m.ssim(x, y) == pytest.approx(expected, abs=1e-12)


def test_ssim_equals_scikit_image_defaults(triple):
    f, a, b = triple
    for x in (a, b):
        reference = structural_similarity(f, x, win_size=7, data_range=255)
        assert m.ssim(f, x) == pytest.approx(reference, abs=1e-12)
        assert m.ssim(f, x, data_range=2) == pytest.approx(structural_similarity(f, x, data_range=2), abs=1e-12)


# ----------------------------------------------------------------------------------------------------- PSNR


def test_psnr_on_known_mse():
    # F = 100, A = 110, B = 90: MSE(F,A) = MSE(F,B) = 100, so PSNR = 10 log10(255^2 / 100) = 28.1308 dB,
    # and with peak max(F) = 100: 10 log10(100^2 / 100) = 20 dB.
    f, a, b = np.full((4, 4), 100.0), np.full((4, 4), 110.0), np.full((4, 4), 90.0)
    assert m.psnr(f, a, b) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert m.psnr(f, a, b, peak=None) == pytest.approx(20.0, abs=1e-12)


def test_psnr_of_perfect_copy_is_infinite():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert m.psnr(image, image, image) == math.inf


# ------------------------------------------------------------------------------------------------ CC, SCD


def test_correlation_coefficient_pinned_cases(triple):
    _, a, b = triple
    assert m.correlation_coefficient(a, a, a) == pytest.approx(1.0, abs=1e-12)
    assert m.correlation_coefficient(255 - a, a, a) == pytest.approx(-1.0, abs=1e-12)
    # A constant image has no measurable correlation: r is taken as 0.
    assert m.correlation_coefficient(np.full_like(a, 9), a, b) == 0.0


def test_correlation_coefficient_is_invariant_to_affine_change_of_fused(triple):
    f, a, b = triple
    assert m.correlation_coefficient(0.5 * f + 40, a, b) == pytest.approx(m.correlation_coefficient(f, a, b), abs=1e-12)


def test_scd_of_sum_image(rng):
    # F = A + B: F - B = A and F - A = B, so SCD = r(A, A) + r(B, B) = 2.
    a, b = _texture(rng, high=120.0), _texture(rng, high=120.0)
    assert m.scd(a + b, a, b) == pytest.approx(2.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------- Qabf


def _step_edge(shape=(12, 12)) -> np.ndarray:
    image = np.full(shape, 40.0)
    image[:, shape[1] // 2 :] = 200.0
    return image


def test_qabf_of_copy_of_edge_image():
    # F = A = B: at every edge pixel G = 1 and A = 1, so Q^AF = Q^BF = Tg / (1 + e^(kg (1 - Dg)))
    # * Ta / (1 + e^(ka (1 - Da))) = 0.99885 * 0.97592 = 0.974794, and the weighted mean is that value.
    edge = _step_edge()
    expected = m.QABF_TG / (1 + math.exp(m.QABF_KG * 0.5)) * m.QABF_TA / (1 + math.exp(m.QABF_KA * 0.2))
    assert m.qabf(edge, edge, edge) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.974794, abs=1e-6)


def test_qabf_of_flat_fused_image_loses_the_edges():
    # F constant: G = 0 at every source edge pixel, Q = Tg / (1 + e^(-kg Dg)) * Ta / (1 + e^(ka (1 - Da)))
    # (the edge is vertical, its gradient angle 0 or pi, and F's angle atan2(0, 0) = 0: same orientation).
    edge = _step_edge()
    expected = m.QABF_TG / (1 + math.exp(-m.QABF_KG * m.QABF_DG)) * m.QABF_TA / (1 + math.exp(m.QABF_KA * 0.2))
    assert m.qabf(np.full_like(edge, 120.0), edge, edge) == pytest.approx(expected, abs=1e-12)


def test_qabf_wraps_orientation_modulo_pi():
    # An edge and the same edge with reversed contrast have the same orientation (angles differ by pi).
    edge = _step_edge()
    assert m.qabf(240 - edge, edge, edge) == pytest.approx(m.qabf(edge, edge, edge), abs=1e-12)


def test_toolbox_qabf_punishes_a_flip_of_near_horizontal_edges():
    # A horizontal edge tilted by a faint ramp of +-0.1 per column: the angle atan(sy / sx) sits near -pi/2 in
    # A and near +pi/2 in F. Wrapped modulo pi they agree (A about 1); unwrapped they differ by about pi (A about
    # -1, so Q^a about 0), the behaviour of Qabf.m that toolbox_compatible reproduces.
    rows, cols = np.mgrid[0:12, 0:12]
    step = np.where(rows >= 6, 200.0, 40.0)
    a, f = step + 0.1 * cols, step - 0.1 * cols + 1.1
    assert m.qabf(f, a, a) > 0.9
    assert m.qabf(f, a, a, toolbox_compatible=True) < 0.5


def _qabf_toolbox_reference(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf.m written out directly: conv2(..., 'same') Sobel, atan(SAy / SAx) (pi/2 where SAx = 0),
    G = gF / gA, gA / gF or gF (where equal), A = 1 - |aA - aF| / (pi/2), weights gA and gB."""
    h1 = np.array([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]])
    h3 = np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])

    def strength_and_angle(x):
        sx, sy = convolve2d(x, h3, mode="same"), convolve2d(x, h1, mode="same")
        with np.errstate(divide="ignore", invalid="ignore"):
            angle = np.where(sx != 0, np.arctan(sy / sx), math.pi / 2)
        return np.sqrt(sx**2 + sy**2), angle

    def preservation(gx, ax, gf, af):
        g = np.where(gx > gf, gf / np.where(gx > 0, gx, 1), np.where(gx == gf, gf, gx / np.where(gf > 0, gf, 1)))
        orientation = 1 - np.abs(ax - af) / (math.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * (orientation - 0.8)))

    (ga, aa), (gb, ab), (gf, af) = (strength_and_angle(x) for x in (a, b, f))
    return float((preservation(ga, aa, gf, af) * ga + preservation(gb, ab, gf, af) * gb).sum() / (ga + gb).sum())


def test_toolbox_qabf_matches_direct_reference(triple):
    f, a, b = triple
    assert m.qabf(f, a, b, toolbox_compatible=True) == pytest.approx(_qabf_toolbox_reference(f, a, b), abs=1e-12)


# ------------------------------------------------------------------------------------------------------ VIF


def _vifp_reference(ref: np.ndarray, dist: np.ndarray) -> float:
    """Straightforward VIFP with full 2-D windows and convolve2d('valid'), as in Sheikh's vifp_mscale."""
    kept = present = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        offsets = np.arange(n) - (n - 1) / 2
        window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * (n / 5) ** 2))
        window /= window.sum()
        if scale > 1:
            ref = convolve2d(ref, window, mode="valid")[::2, ::2]
            dist = convolve2d(dist, window, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, window, mode="valid"), convolve2d(dist, window, mode="valid")
        s1 = np.maximum(convolve2d(ref * ref, window, mode="valid") - mu1**2, 0)
        s2 = np.maximum(convolve2d(dist * dist, window, mode="valid") - mu2**2, 0)
        s12 = convolve2d(ref * dist, window, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10], sv[s1 < 1e-10], s1[s1 < 1e-10] = 0, s2[s1 < 1e-10], 0
        g[s2 < 1e-10], sv[s2 < 1e-10] = 0, 0
        sv[g < 0], g[g < 0] = s2[g < 0], 0
        sv = np.maximum(sv, 1e-10)
        kept += np.log10(1 + g * g * s1 / (sv + 2)).sum()
        present += np.log10(1 + s1 / 2).sum()
    return kept / present


def test_vif_matches_direct_reference(rng):
    a, b = _texture(rng, (64, 72)), _texture(rng, (64, 72))
    f = 0.7 * a + 0.3 * b
    expected = _vifp_reference(a, f) + _vifp_reference(b, f)
    assert m.vif(f, a, b) == pytest.approx(expected, rel=1e-9)


def test_vif_pinned_cases(rng):
    a = _texture(rng, (40, 40), high=200.0)
    # A copy keeps all information: VIFP = 1 per source (up to the 1e-10 regulariser), 2 in total.
    assert m.vif(a, a, a) == pytest.approx(2.0, abs=1e-6)
    # VIF uses local variances only: a brightness offset changes nothing; a flat F keeps nothing.
    assert m.vif(a + 30, a, a) == pytest.approx(m.vif(a, a, a), abs=1e-9)
    assert m.vif(np.full_like(a, 90), a, a) == 0.0
    assert m.vif(0.5 * a + 50, a, a) < 2.0


# ------------------------------------------------------------------------------------- conventions, report


def test_compute_metrics_reports_every_label_in_order(triple):
    report = m.compute_metrics(*triple)
    assert tuple(report.values) == tuple(m.METRICS)
    assert report.convention == "standard"
    assert all(isinstance(v, float) and math.isfinite(v) for v in report.values.values())
    assert set(m.PAPER_METRICS) <= set(m.METRICS) and len(m.METRICS) == 11
    assert all(m.HIGHER_IS_BETTER[label] for label in m.METRICS)


def test_published_convention_differs_only_where_documented(triple):
    f, a, b = triple
    standard = m.compute_metrics(f, a, b).values
    published = m.compute_metrics(f, a, b, convention="published").values
    assert published["MI"] == pytest.approx(standard["MI"] * math.log(2), rel=1e-12)  # nats
    # Summed over the sources, with the data range 2 that scikit-image < 0.20 assumed for float input.
    ssim_range_2 = structural_similarity(f, a, data_range=2) + structural_similarity(f, b, data_range=2)
    assert published["SSIM"] == pytest.approx(ssim_range_2, rel=1e-12)
    assert published["PSNR"] == pytest.approx(standard["PSNR"] + 20 * math.log10(f.max() / 255), rel=1e-12)
    assert published["Qabf"] == m.qabf(f, a, b, toolbox_compatible=True)
    for label in set(m.METRICS) - {"MI", "SSIM", "PSNR", "Qabf"}:
        assert published[label] == standard[label]


@pytest.mark.parametrize("convention", sorted(m.CONVENTIONS))
def test_metrics_are_symmetric_in_the_sources(triple, convention):
    f, a, b = triple
    forward = m.compute_metrics(f, a, b, convention=convention).values
    swapped = m.compute_metrics(f, b, a, convention=convention).values
    for label in m.METRICS:
        assert forward[label] == pytest.approx(swapped[label], rel=1e-12, abs=1e-12), label


def test_histogram_metrics_are_invariant_to_a_joint_pixel_permutation(triple, rng):
    f, a, b = triple
    order = rng.permutation(f.size)
    shuffled = [x.ravel()[order].reshape(x.shape) for x in (f, a, b)]
    assert m.entropy(shuffled[0]) == pytest.approx(m.entropy(f), abs=1e-12)
    assert m.mutual_information(*shuffled) == pytest.approx(m.mutual_information(f, a, b), abs=1e-12)
    assert m.correlation_coefficient(*shuffled) == pytest.approx(m.correlation_coefficient(f, a, b), abs=1e-12)


def test_colour_inputs_are_scored_on_their_luma(rng):
    rgb_f = rng.uniform(0, 255, (24, 24, 3))
    a = _texture(rng, (24, 24))
    rgb_b = rng.uniform(0, 255, (24, 24, 3))
    colour = m.compute_metrics(rgb_f, a, rgb_b).values
    gray = m.compute_metrics(luma(rgb_f), a, luma(rgb_b)).values
    assert colour == pytest.approx(gray, rel=1e-12)


def test_uint8_and_float_inputs_agree(triple):
    as_uint8 = [x.astype(np.uint8) for x in triple]
    assert m.compute_metrics(*as_uint8).values == pytest.approx(m.compute_metrics(*triple).values, rel=1e-12)


def test_metrics_table_entries_accept_a_convention(triple):
    f, a, b = triple
    assert m.METRICS["MI"](f, a, b, m.CONVENTIONS["published"]) == pytest.approx(
        m.compute_metrics(f, a, b, convention="published").values["MI"]
    )


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("fused", "message"),
    [
        (np.zeros((0, 20)), "empty"),
        (np.full((20, 20), np.nan), "NaN"),
        (np.zeros(20), r"gray \(H, W\) or RGB"),
        (np.zeros((20, 20, 4)), "alpha"),
        (np.zeros((2, 20, 20, 3)), r"gray \(H, W\) or RGB"),
        (np.full((20, 20), 300.0), "0..255"),
        (np.full((20, 20), -1.0), "0..255"),
        (np.zeros((20, 20), dtype=bool), "dtype"),
        (np.zeros((20, 21)), "same height and width"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(fused, message):
    image = np.zeros((20, 20))
    with pytest.raises(ValueError, match=message):
        m.compute_metrics(fused, image, image)


def test_too_small_images_and_unknown_names_are_rejected():
    tiny = np.zeros((5, 5))
    with pytest.raises(ValueError, match="at least 7x7"):
        m.ssim(tiny, tiny)
    with pytest.raises(ValueError, match="at least 17x17"):
        m.compute_metrics(np.zeros((16, 30)), np.zeros((16, 30)), np.zeros((16, 30)))
    image = np.zeros((20, 20))
    with pytest.raises(ValueError, match="convention"):
        m.compute_metrics(image, image, image, convention="paper")
    with pytest.raises(ValueError, match="unknown metric"):
        m.compute_metrics(image, image, image, metrics=("EN", "QABF"))


def test_metrics_module_imports_no_torch():
    tree = ast.parse(Path(m.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "torch" for name in imported)


def test_compute_metrics_validates_each_image_once(monkeypatch):
    rng = np.random.default_rng(0)
    f, a, b = (rng.integers(0, 256, (24, 24), dtype=np.uint8) for _ in range(3))
    checked = []
    as_luma = m._as_luma
    monkeypatch.setattr(m, "_as_luma", lambda x, name, *args: checked.append(name) or as_luma(x, name, *args))
    report = m.compute_metrics(f, a, b)
    assert sorted(checked) == ["a", "b", "fused"] and set(report.values) == set(m.METRICS)
    monkeypatch.undo()
    assert report.values == m.compute_metrics(f, a, b, metrics=tuple(m.METRICS)).values
    assert all(report.values[label] == pytest.approx(fn(f, a, b, m.get_convention("standard")))
               for label, fn in m.METRICS.items())

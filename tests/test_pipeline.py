"""FusionPipeline.fuse: any size, bit-for-bit determinism, B's colour kept, intermediates, tiling, input checks;
fuse_batch: the noise of each pair, its results against fuse."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import ALL_PRESETS, make_pair, tiny
from fusion_core.checkpoint import DEFAULT_CHECKPOINT, load_pipeline
from fusion_core.color import luma, rgb_to_ycbcr
from fusion_core.config import PRESETS
from fusion_core.models.dgd_fusion import DGDFusionModel, build_model
from fusion_core.pipeline import DEFAULT_SEED, FusionPipeline, build_pipeline

STAGES = [f"{side}{i}" for side in ("down", "up") for i in range(1, 5)]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size", [(32, 32), (37, 53)])
@pytest.mark.parametrize("name", ALL_PRESETS)
def test_fuse_every_preset_keeps_the_input_size(name, size, rng):
    torch.manual_seed(0)
    pipeline = build_pipeline(tiny(PRESETS[name]))
    a, b = make_pair(rng, *size)
    result = pipeline.fuse(a, b)
    assert result.fused.shape == (*size, 3) and result.fused.dtype == np.uint8
    assert result.y_fused.shape == size and result.y_fused.dtype == np.float32
    assert np.isfinite(result.y_fused).all()
    assert ((result.y_fused >= 0) & (result.y_fused <= 1)).all()
    assert result.tiles == 1 and result.timesteps == (5, 50, 100)


def test_same_input_and_seed_give_identical_output(tiny_pipeline, rng):
    a, b = make_pair(rng, 37, 53)
    first = tiny_pipeline.fuse(a, b, generator=seeded(7))
    again = tiny_pipeline.fuse(a, b, generator=seeded(7))
    other = tiny_pipeline.fuse(a, b, generator=seeded(8))
    assert np.array_equal(first.fused, again.fused)
    assert np.array_equal(first.y_fused, again.y_fused)
    assert not np.array_equal(first.y_fused, other.y_fused)


def test_default_generator_is_seeded_on_every_call(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    first, again = tiny_pipeline.fuse(a, b), tiny_pipeline.fuse(a, b)
    explicit = tiny_pipeline.fuse(a, b, generator=seeded(DEFAULT_SEED))
    assert np.array_equal(first.y_fused, again.y_fused)
    assert np.array_equal(first.y_fused, explicit.y_fused)


def test_fuse_leaves_the_global_random_state_alone(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    state = torch.get_rng_state()
    tiny_pipeline.fuse(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_colour_b_keeps_its_chroma_exactly(tiny_pipeline, rng):
    a, b = make_pair(rng, 37, 53)
    result = tiny_pipeline.fuse(a, b)
    # Changing only Y adds the same amount to R, G and B, and B is whole numbers, so rounding shifts all
    # three channels by the same integer: where nothing was clipped, Cb and Cr are B's exactly.
    unclipped = ((result.fused > 0) & (result.fused < 255)).all(axis=-1)
    assert unclipped.mean() > 0.5
    shift = result.fused.astype(np.int64) - b.astype(np.int64)
    assert (shift[..., 0] == shift[..., 1])[unclipped].all() and (shift[..., 0] == shift[..., 2])[unclipped].all()
    chroma_out = rgb_to_ycbcr(result.fused, peak=255.0)[..., 1:]
    chroma_b = rgb_to_ycbcr(b, peak=255.0)[..., 1:]
    np.testing.assert_allclose(chroma_out[unclipped], chroma_b[unclipped], rtol=0, atol=1e-9)
    # and the luma is Y_F up to the uint8 rounding
    y_out = luma(result.fused) / 255.0
    assert np.abs(y_out - result.y_fused)[unclipped].max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("gray_shape", ["2d", "one_channel"])
def test_gray_b_gives_a_gray_output(tiny_pipeline, rng, gray_shape):
    a, b = make_pair(rng, 37, 53, colour=False)
    b = b if gray_shape == "2d" else b[..., None]
    result = tiny_pipeline.fuse(a, b)
    assert result.fused.shape == (37, 53) and result.fused.dtype == np.uint8
    assert np.array_equal(result.fused, np.rint(result.y_fused * 255).astype(np.uint8))


def test_gray_b_fuses_like_the_same_b_repeated_to_rgb(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32, colour=False)
    gray = tiny_pipeline.fuse(a, b)
    rgb = tiny_pipeline.fuse(a, np.repeat(b[..., None], 3, axis=2))
    np.testing.assert_allclose(gray.y_fused, rgb.y_fused, rtol=0, atol=1e-6)


def test_uint16_and_float_inputs_match_uint8(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    reference = tiny_pipeline.fuse(a, b).y_fused
    as_float = tiny_pipeline.fuse(a / 255.0, b / 255.0).y_fused
    as_uint16 = tiny_pipeline.fuse(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257).y_fused
    np.testing.assert_allclose(as_float, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(as_uint16, reference, rtol=0, atol=1e-5)


def test_intermediates_when_asked(tiny_pipeline, rng):
    a, b = make_pair(rng, 37, 53)
    record = tiny_pipeline.fuse(a, b, return_intermediates=True).intermediates
    num_t, experts = 3, tiny_pipeline.config.unet.num_experts
    assert set(record.experts) == set(STAGES)
    assert set(record.gates) == set(record.gate_activity) == {*STAGES, "mid"}
    assert set(record.attention) == {"glsa1", "glsa2"}
    assert record.weight_map.shape == (37, 53)  # the head's map is at full resolution
    assert record.gate_activity["mid"].shape == (num_t, 4)
    for stage in STAGES:
        alpha = record.experts[stage]
        assert alpha.shape == (num_t, experts)
        np.testing.assert_allclose(alpha.sum(-1), 1, rtol=0, atol=1e-5)
        gate = record.gates[stage]
        assert gate.ndim == 3 and gate.shape[0] == num_t
        assert ((gate > 0) & (gate < 1)).all()
    # 37x53 is padded to 64x64; the UNet's first stage runs at 32x32, cropped to the unpadded 19x27
    assert record.gates["down1"].shape == (num_t, 19, 27)
    for m_c in record.attention.values():
        assert m_c.shape == (19, 27)
        assert ((m_c > 0) & (m_c < 1)).all()


def test_no_intermediates_unless_asked(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    assert tiny_pipeline.fuse(a, b).intermediates is None


def test_intermediates_do_not_change_the_output(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    plain = tiny_pipeline.fuse(a, b)
    recorded = tiny_pipeline.fuse(a, b, return_intermediates=True)
    assert np.array_equal(plain.fused, recorded.fused)


def test_tiled_fusion_is_close_to_untiled(tiny_pipeline, rng):
    a, b = make_pair(rng, 70, 90)
    whole = tiny_pipeline.fuse(a, b)
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    tiled = tiny_pipeline.fuse(a, b, return_intermediates=True)
    assert tiled.tiles == 12 and whole.tiles == 1
    assert tiled.fused.shape == (70, 90, 3) and tiled.y_fused.shape == (70, 90)
    assert tiled.intermediates is None and any("tiles" in w for w in tiled.warnings)
    # Not equal: each tile draws its own noise and sees only its own context (norm statistics, pooled
    # global context, channel attention), so a loose bound of a few grey levels at worst (an image corner,
    # where a tile's context differs most) and well under one on average.
    difference = np.abs(tiled.y_fused - whole.y_fused)
    assert difference.max() < 0.03 and difference.mean() < 0.005


def test_tiles_are_placed_and_blended_exactly(tiny_pipeline, rng, monkeypatch):
    """With a tile function that returns its own Y_A, the blended image must be Y_A everywhere."""
    a, b = make_pair(rng, 70, 90)
    tiles = []

    def echo(y_a, b_rgb, timesteps, generator, return_intermediates):
        tiles.append(y_a.shape)
        return y_a.copy(), None

    monkeypatch.setattr(tiny_pipeline, "_fuse_tile", echo)
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    result = tiny_pipeline.fuse(a, b)
    assert result.tiles == len(tiles) == 12 and all(t == (32, 32) for t in tiles)
    np.testing.assert_allclose(result.y_fused, a / 255.0, rtol=0, atol=1e-6)


def test_tile_edges_are_ramped_not_cut(tiny_pipeline, rng, monkeypatch):
    """Tiles that disagree completely (alternately 0 and 1) still blend without a jump at their edges."""
    a, b = make_pair(rng, 70, 90)
    count = iter(range(100))

    def alternate(y_a, b_rgb, timesteps, generator, return_intermediates):
        return np.full(y_a.shape, next(count) % 2, dtype=np.float32), None

    monkeypatch.setattr(tiny_pipeline, "_fuse_tile", alternate)
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    y = tiny_pipeline.fuse(a, b).y_fused
    assert y.min() < 0.01 and y.max() > 0.99
    # a hard cut would jump by 1 between neighbours; an 8-pixel linear ramp moves about 1/8 per pixel
    assert np.abs(np.diff(y, axis=0)).max() < 0.25
    assert np.abs(np.diff(y, axis=1)).max() < 0.25


@pytest.mark.parametrize("a_shape, b_shape, kwargs, message", [
    ((32, 32), (32, 40, 3), {}, "same size"),
    ((1, 32, 32, 1), (32, 32, 3), {}, r"expected \(H, W\)"),
    ((32, 32), (32, 32, 4), {}, r"expected \(H, W\)"),
    ((1, 32), (1, 32), {}, ">= 2"),
    ((32, 32), (32, 32), {"feature_timesteps": (5, 50)}, "reads 3 feature timesteps"),
    ((32, 32), (32, 32), {"feature_timesteps": ()}, "reads 3 feature timesteps, got 0"),
    ((32, 32), (32, 32), {"feature_timesteps": (5, 50, 1000)}, r"must lie in \[0, 1000\)"),
    ((32, 32), (32, 32), {"feature_timesteps": (-1, 50, 100)}, r"must lie in \[0, 1000\)"),
])
def test_bad_shapes_and_timesteps_are_refused(tiny_pipeline, a_shape, b_shape, kwargs, message):
    a, b = np.zeros(a_shape, dtype=np.uint8), np.zeros(b_shape, dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        tiny_pipeline.fuse(a, b, **kwargs)


@pytest.mark.parametrize("bad, message", [
    (np.full((32, 32), np.nan, dtype=np.float32), "NaN"),
    (np.full((32, 32), 1.5, dtype=np.float32), r"outside \[0, 1\].*scale it"),
    (np.full((32, 32), -0.1), r"outside \[0, 1\]"),
    (np.zeros((32, 32), dtype=np.int32), "dtype int32"),
    ([[0, 1], [1, 0]], "numpy array"),
])
def test_bad_values_are_refused(tiny_pipeline, bad, message):
    good = np.zeros((32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        tiny_pipeline.fuse(bad, good)
    with pytest.raises(ValueError, match=message):
        tiny_pipeline.fuse(good, bad)


def test_random_weights_are_reported(tiny_pipeline, tiny_config, rng):
    a, b = make_pair(rng, 32, 32)
    assert any("random weights" in w for w in tiny_pipeline.fuse(a, b).warnings)
    trained = FusionPipeline(DGDFusionModel(tiny_config), trained=True).eval()
    assert trained.fuse(a, b).warnings == ()


def test_build_pipeline_draws_every_initial_weight_from_its_generator(tiny_config):
    torch.manual_seed(1)  # a different global state before each build: none of it may leak into the weights
    first = build_pipeline(tiny_config, seeded(7)).model.state_dict()
    torch.manual_seed(2)
    state = torch.get_rng_state()
    generator = seeded(7)
    again = build_pipeline(tiny_config, generator).model.state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global generator is left as it was
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(generator.get_state(), seeded(7).get_state())  # it advanced by what was drawn
    other = build_pipeline(tiny_config, seeded(8)).model.state_dict()
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_with_head_of_keeps_its_unet_and_copies_the_donor_head(tiny_config):
    own = build_model(tiny_config, seeded(1))
    donor = build_model(replace(tiny_config, head=replace(tiny_config.head, residual_scale=0.5)), seeded(2))
    state = torch.get_rng_state()
    joined = own.with_head_of(donor)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global generator is left as it was
    assert joined.config.head == donor.config.head and joined.config.unet == own.config.unet
    for module, source in ((joined.unet, own.unet), (joined.head, donor.head)):
        expected = source.state_dict()
        assert all(torch.equal(value, expected[name]) for name, value in module.state_dict().items())
    wider = replace(tiny_config, unet=replace(tiny_config.unet, channels=(8, 16, 16, 32)))
    with pytest.raises(ValueError, match=r"widths \(8, 16, 16, 32\)"):
        own.with_head_of(build_model(wider, seeded(3)))


# ---------------------------------------------------------------------------------------------- fuse_batch


def _mixed_pairs(rng):
    """Four pairs of two sizes, colour and gray B, in an order that interleaves the sizes."""
    return [make_pair(rng, 32, 32), make_pair(rng, 40, 48), make_pair(rng, 32, 32, colour=False),
            make_pair(rng, 32, 32)]


def test_fuse_batch_of_one_is_fuse_bit_for_bit(tiny_pipeline, rng):
    pairs = _mixed_pairs(rng)
    batch = tiny_pipeline.fuse_batch(pairs, generators=[seeded(s) for s in (3, 4, 5, 6)], batch_size=1)
    for (a, b), seed, result in zip(pairs, (3, 4, 5, 6), batch, strict=True):
        alone = tiny_pipeline.fuse(a, b, generator=seeded(seed))
        assert np.array_equal(result.y_fused, alone.y_fused) and np.array_equal(result.fused, alone.fused)
        assert result.fused.shape == alone.fused.shape and result.warnings == alone.warnings


@pytest.fixture
def shared_pass(monkeypatch):
    """fuse_batch as on CUDA, here on the CPU: same-size pairs share a pass of the network."""
    monkeypatch.setattr("fusion_core.pipeline.SHARED_PASS_DEVICES", ("cuda", "cpu"))


@pytest.mark.usefixtures("shared_pass")
def test_a_shared_pass_gives_each_pair_the_noise_fuse_gives_it(tiny_pipeline, rng, monkeypatch):
    """The noise that reaches q_sample for pair i of a batch is, bit for bit, what a lone fuse draws for it."""
    drawn = []
    q_sample = tiny_pipeline.diffusion.q_sample
    monkeypatch.setattr(tiny_pipeline.diffusion, "q_sample",
                        lambda x0, t, noise=None: drawn.append(noise) or q_sample(x0, t, noise=noise))
    pairs = [make_pair(rng, 32, 32) for _ in range(3)]
    tiny_pipeline.fuse_batch(pairs, generators=[seeded(s) for s in (3, 4, 5)], batch_size=3)
    together = drawn.pop().reshape(3, 3, 4, 32, 32)  # (T, N, 4, H, W): timestep-major
    for i, (a, b) in enumerate(pairs):
        tiny_pipeline.fuse(a, b, generator=seeded(3 + i))
        assert torch.equal(together[:, i], drawn.pop())


def _same_size_pairs(rng, height, width):
    """Four pairs of one size, B in colour but for the second."""
    return [make_pair(rng, height, width, colour=i != 1) for i in range(4)]


def _assert_fuse_batch_is_fuse_bit_for_bit(pipeline, pairs, seeds, batch_size):
    batch = pipeline.fuse_batch(pairs, generators=[seeded(s) for s in seeds], batch_size=batch_size)
    for (a, b), seed, result in zip(pairs, seeds, batch, strict=True):
        alone = pipeline.fuse(a, b, generator=seeded(seed))
        assert np.array_equal(result.y_fused, alone.y_fused) and np.array_equal(result.fused, alone.fused)
        assert np.abs(result.y_fused - pipeline.fuse(a, b, generator=seeded(seed + 10)).y_fused).max() > 1e-3


@pytest.mark.parametrize("batch_size", [3, 4])
def test_fuse_batch_is_fuse_bit_for_bit_on_the_cpu(tiny_pipeline, rng, batch_size):
    """Same-size pairs, batch_size 3 (chunks of 3 and 1) and 4: each result is fuse's with its seed, bit for
    bit, and differs from the result with other noise. 37 x 53 is padded to two strides, so every layer of
    the UNet and the head runs on more than one pixel."""
    _assert_fuse_batch_is_fuse_bit_for_bit(tiny_pipeline, _same_size_pairs(rng, 37, 53), (3, 4, 5, 6), batch_size)


@pytest.mark.slow
def test_fuse_batch_is_fuse_bit_for_bit_with_the_bundled_checkpoint(rng):
    """The trained cpu-preset network at 160 x 192 (padded to 192 x 192, three of its strides)."""
    pipeline = load_pipeline(DEFAULT_CHECKPOINT)
    _assert_fuse_batch_is_fuse_bit_for_bit(pipeline, _same_size_pairs(rng, 160, 192), (3, 4, 5, 6), 4)


@pytest.mark.usefixtures("shared_pass")
def test_a_shared_pass_matches_fuse_to_float_rounding(tiny_pipeline, rng):
    """In a shared pass the network's float32 arithmetic may round differently (see fuse_batch): within 1e-6
    of Y_F (measured: 1.2e-7) and one 8-bit level; a pair given another pair's noise would be far off."""
    pairs = _mixed_pairs(rng)
    seeds = (3, 4, 5, 6)
    batch = tiny_pipeline.fuse_batch(pairs, generators=[seeded(s) for s in seeds], batch_size=4)
    for (a, b), seed, result in zip(pairs, seeds, batch, strict=True):
        alone = tiny_pipeline.fuse(a, b, generator=seeded(seed))
        np.testing.assert_allclose(result.y_fused, alone.y_fused, rtol=0, atol=1e-6)
        assert np.abs(result.fused.astype(int) - alone.fused).max() <= 1
        other_noise = tiny_pipeline.fuse(a, b, generator=seeded(seed + 10))
        assert np.abs(result.y_fused - other_noise.y_fused).max() > 1e-3


@pytest.mark.usefixtures("shared_pass")
def test_fuse_batch_fuses_a_large_pair_in_tiles_as_fuse_does(tiny_pipeline, rng):
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    pairs = [make_pair(rng, 40, 48), make_pair(rng, 40, 48)]
    batch = tiny_pipeline.fuse_batch(pairs, batch_size=2)
    for (a, b), result in zip(pairs, batch, strict=True):
        assert result.tiles == 4 and np.array_equal(result.y_fused, tiny_pipeline.fuse(a, b).y_fused)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "at least 1"),
    ({"generators": [torch.Generator()]}, "one generator per pair: 1 generators for 2 pairs"),
])
def test_fuse_batch_refuses_bad_arguments(tiny_pipeline, rng, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline.fuse_batch([make_pair(rng, 32, 32), make_pair(rng, 32, 32)], **kwargs)


def test_fuse_batch_names_the_bad_pair(tiny_pipeline, rng):
    a, b = make_pair(rng, 32, 32)
    with pytest.raises(ValueError, match="pair 1: A is 32x32 but B is 40x32"):
        tiny_pipeline.fuse_batch([(a, b), (a, np.zeros((32, 40, 3), np.uint8))])


def test_on_tile_is_called_before_each_tile_and_can_stop_the_fusion(tiny_pipeline, rng):
    a, b = make_pair(rng, 70, 90)
    seen = []
    tiny_pipeline.fuse(a, b, on_tile=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1)]
    tiny_pipeline.tile_size, tiny_pipeline.tile_overlap = 32, 8
    seen.clear()
    tiny_pipeline.fuse(a, b, on_tile=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 12) for done in range(12)]

    class Late(Exception):
        pass

    def deadline(done: int, total: int) -> None:
        if done == 5:
            raise Late

    passes = []
    original = tiny_pipeline._fuse_tile
    tiny_pipeline._fuse_tile = lambda *args: passes.append(1) or original(*args)
    with pytest.raises(Late):
        tiny_pipeline.fuse(a, b, on_tile=deadline)
    assert len(passes) == 5  # no tile's pass after the one that raised

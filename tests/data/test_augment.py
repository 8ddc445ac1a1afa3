"""Augmentation ops on small hand-made images (impulses, mirrors, constants), whose exact results
are known; the parameters each op drew are read back with `op.draw` from the same key."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from dist_nn import backend
from dist_nn.data.augment import (OPS, Augmenter, BrightnessContrast, Crop, Cutout, Flip, Noise,
                                  Rotate, Scale, from_config)

KEY = (7, 0, 3, 11)  # (seed, rank, epoch, step)


def host_rng(key=KEY):
    return np.random.default_rng(np.random.SeedSequence(key))


def drawn(op, x, strength=1.0, key=KEY):
    """The parameters op draws for x under key: the same draws as run(op, x, key)."""
    return op.draw(host_rng(key), x.shape, strength)


def run(op, x, strength=1.0, key=KEY):
    return op(x, host_rng(key), strength)


def impulse(n, size, row, col):
    """(n, 1, size, size) zeros with a 1 at (row, col)."""
    x = np.zeros((n, 1, size, size))
    x[:, :, row, col] = 1.0
    return x


def centroid(image):
    """(H, W) -> (row, col), weighted by the values."""
    rows, cols = np.indices(image.shape)
    return np.array([(rows * image).sum(), (cols * image).sum()]) / image.sum()


def all_ops(p=1.0):
    return [Flip(p), Crop(3, p), Rotate(20.0, p), Scale(0.2, p), BrightnessContrast(0.3, 0.3, p),
            Noise(0.1, p), Cutout(4, p)]


def test_the_augmenter_draws_from_the_key_as_the_tests_do():
    x = np.random.default_rng(0).standard_normal((8, 2, 6, 6))
    out, rng = x, host_rng()
    for op in all_ops(0.5):
        out = op(out, rng, 1.0)
    assert_array_equal(Augmenter(all_ops(0.5))(x, KEY), out)


# --- flip --------------------------------------------------------------------------------

def test_flip_mirrors_exactly_the_chosen_samples():
    x = np.arange(16 * 2 * 3 * 4, dtype=np.float64).reshape(16, 2, 3, 4)  # no mirror symmetry
    assert_array_equal(run(Flip(p=1.0), x), x[..., ::-1])
    assert_array_equal(run(Flip(p=0.0), x), x)
    chosen = drawn(Flip(p=0.5), x)["chosen"]
    assert 0 < chosen.sum() < 16
    out = run(Flip(p=0.5), x)
    assert_array_equal(out[chosen], x[chosen][..., ::-1])
    assert_array_equal(out[~chosen], x[~chosen])


# --- crop --------------------------------------------------------------------------------

def test_crop_moves_an_impulse_by_exactly_the_drawn_shift():
    x = impulse(64, 9, 4, 4)
    op = Crop(padding=2)
    params, out = drawn(op, x), run(op, x)
    assert set(params["dy"]) == set(range(-2, 3)) and set(params["dx"]) == set(range(-2, 3))
    for image, dy, dx in zip(out, params["dy"], params["dx"]):
        expected = np.zeros((1, 9, 9))
        expected[0, 4 + dy, 4 + dx] = 1.0
        assert_array_equal(image, expected)


def test_crop_is_a_shift_with_zeros_entering_from_the_border():
    x = np.random.default_rng(1).uniform(1.0, 2.0, (16, 3, 8, 7))  # no zeros of its own
    op = Crop(padding=3, p=0.75)
    params, out = drawn(op, x), run(op, x)
    assert (params["dy"] == 0).any() and (params["dy"] != 0).any()
    for i, (dy, dx) in enumerate(zip(params["dy"], params["dx"])):
        expected = np.zeros_like(x[i])
        for r in range(8):
            for c in range(7):
                if 0 <= r - dy < 8 and 0 <= c - dx < 7:
                    expected[:, r, c] = x[i, :, r - dy, c - dx]
        assert_array_equal(out[i], expected)
        assert (out[i] == 0).sum() == 3 * (8 * 7 - (8 - abs(dy)) * (7 - abs(dx)))


# --- rotate and scale --------------------------------------------------------------------

def test_rotate_by_90_degrees_is_rot90_and_by_0_the_identity():
    x = np.random.default_rng(2).standard_normal((3, 2, 7, 7))
    op, chosen = Rotate(degrees=90.0, p=1.0), np.ones(3, bool)
    quarter = op.apply(x, {"chosen": chosen, "degrees": np.full(3, 90.0)})
    assert_allclose(quarter, np.rot90(x, 1, axes=(2, 3)), atol=1e-9)  # counter-clockwise
    assert_array_equal(op.apply(x, {"chosen": chosen, "degrees": np.zeros(3)}), x)


def test_rotate_moves_an_impulse_to_the_rotated_position():
    x = impulse(16, 21, 10, 17)  # 7 pixels right of the centre (10, 10)
    op = Rotate(degrees=45.0, p=1.0)
    angle, out = np.deg2rad(drawn(op, x)["degrees"]), run(op, x)
    assert np.abs(angle).max() <= np.pi / 4 and np.ptp(angle) > np.pi / 8
    for image, t in zip(out[:, 0], angle):
        expected = np.array([10 - 7 * np.sin(t), 10 + 7 * np.cos(t)])  # row down, col right
        assert np.abs(centroid(image) - expected).max() < 0.15
        assert np.abs(np.unravel_index(image.argmax(), image.shape) - expected).max() <= 1.0


def test_rotate_fills_zeros_outside_and_fades_linearly_at_the_border():
    ones, t = np.ones((1, 1, 9, 11)), np.deg2rad(30.0)
    out = Rotate().apply(ones, {"chosen": np.ones(1, bool), "degrees": np.array([30.0])})
    rows, cols = np.indices((9, 11))
    u, v = cols - 5.0, rows - 4.0  # offsets from the centre (4, 5)
    src_col, src_row = np.cos(t) * u - np.sin(t) * v + 5, np.sin(t) * u + np.cos(t) * v + 4

    def inside(s, size):  # bilinear weight of a ones image that falls inside [0, size - 1]
        return np.clip(1 - np.maximum(np.maximum(-s, s - (size - 1)), 0), 0, 1)
    expected = inside(src_col, 11) * inside(src_row, 9)
    assert (expected == 0).any() and (expected == 1).any()
    assert_allclose(out[0, 0], expected, atol=1e-12)


def test_scale_moves_an_impulse_radially_by_the_factor():
    op, chosen = Scale(amount=0.5, p=1.0), np.ones(1, bool)
    shrunk = op.apply(impulse(1, 21, 10 + 4, 10 - 8), {"chosen": chosen, "factor": np.array([.75])})
    assert_allclose(shrunk, impulse(1, 21, 10 + 3, 10 - 6), atol=1e-12)
    grown = op.apply(impulse(1, 21, 10 - 2, 10 + 4), {"chosen": chosen, "factor": np.array([1.5])})
    assert np.unravel_index(grown.argmax(), grown.shape) == (0, 0, 10 - 3, 10 + 6)
    assert_allclose(centroid(grown[0, 0]), [10 - 3, 10 + 6], atol=1e-9)
    x = impulse(1, 21, 10 - 2, 10 + 4)
    assert_array_equal(op.apply(x, {"chosen": chosen, "factor": np.ones(1)}), x)


def test_scale_draws_factors_in_range_and_moves_impulses_by_them():
    x = impulse(16, 21, 10 + 5, 10 - 6)
    op = Scale(amount=0.2, p=1.0)
    factor, out = drawn(op, x)["factor"], run(op, x)
    assert factor.min() >= 0.8 and factor.max() <= 1.2 and np.ptp(factor) > 0.1
    for image, f in zip(out[:, 0], factor):
        assert np.abs(centroid(image) - (10 + f * np.array([5, -6]))).max() < 0.3


# --- brightness and contrast ---------------------------------------------------------------

def test_brightness_contrast_follows_the_formula():
    op = BrightnessContrast(brightness=0.5, contrast=0.5, p=1.0)
    constant = np.full((8, 2, 4, 4), 0.7)
    params = drawn(op, constant)
    c, b = (params[k][:, None, None, None] for k in ("contrast", "brightness"))
    assert c.min() >= 0.5 and c.max() <= 1.5 and b.min() >= -0.5 and b.max() <= 0.5
    assert_allclose(run(op, constant), np.broadcast_to(0.7 + b, constant.shape), rtol=1e-12)
    two_valued = np.full((8, 2, 4, 4), -1.0)
    two_valued[..., 2:] = 3.0  # mean 1
    assert_allclose(run(op, two_valued), (two_valued - 1.0) * c + 1.0 + b, rtol=1e-12)


def test_brightness_contrast_leaves_unchosen_samples_exactly():
    x = np.random.default_rng(3).standard_normal((16, 3, 5, 5)).astype(np.float32)
    op = BrightnessContrast(p=0.5)
    params, out = drawn(op, x), run(op, x)
    untouched = (params["contrast"] == 1) & (params["brightness"] == 0)
    assert 0 < untouched.sum() < 16
    assert_array_equal(out[untouched], x[untouched])
    assert (out[~untouched] != x[~untouched]).all()


# --- noise -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_has_zero_mean_and_the_requested_std(dtype):
    x = np.random.default_rng(4).standard_normal((64, 3, 32, 32)).astype(dtype)
    noise = run(Noise(std=0.1, p=1.0), x).astype(np.float64) - x
    assert abs(noise.mean()) < 5 * 0.1 / np.sqrt(noise.size)
    assert abs(noise.std() / 0.1 - 1) < 0.01
    assert abs((np.abs(noise) < 0.1).mean() - 0.6827) < 0.005  # Gaussian: 68% within 1 sigma


def test_noise_touches_only_the_chosen_samples():
    x = np.random.default_rng(5).standard_normal((32, 2, 8, 8))
    op = Noise(std=0.2, p=0.5)
    chosen, out = drawn(op, x)["chosen"], run(op, x)
    assert 0 < chosen.sum() < 32
    assert_array_equal(out[~chosen], x[~chosen])
    assert abs((out[chosen] - x[chosen]).std() / 0.2 - 1) < 0.05


# --- cutout ------------------------------------------------------------------------------

def test_cutout_zeroes_exactly_the_clipped_square():
    x = np.ones((64, 2, 12, 12))
    op = Cutout(size=5, p=1.0)
    params, out = drawn(op, x), run(op, x)
    centre_row, centre_col = params["top"] + 5 // 2, params["left"] + 5 // 2
    assert centre_row.min() >= 0 and centre_row.max() < 12 and centre_col.max() < 12
    clipped = 0
    for image, top, left in zip(out, params["top"], params["left"]):
        expected = np.ones((2, 12, 12))
        expected[:, max(top, 0):top + 5, max(left, 0):left + 5] = 0.0
        assert_array_equal(image, expected)
        clipped += (image == 0).sum() < 2 * 25
    assert 0 < clipped < 64  # both whole and clipped squares were seen


def test_cutout_clips_at_the_border():
    x = np.arange(36.0).reshape(1, 1, 6, 6) + 1
    square = {"size": np.array([4]), "top": np.array([-2]), "left": np.array([4])}
    out = Cutout(size=4).apply(x, square)
    expected = x.copy()
    expected[0, 0, 0:2, 4:6] = 0.0
    assert_array_equal(out, expected)


# --- every op ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", all_ops(), ids=lambda op: type(op).__name__)
def test_op_keeps_shape_and_dtype_never_writes_x_and_is_the_identity_at_strength_0(op, dtype):
    x = np.random.default_rng(6).standard_normal((8, 3, 10, 12)).astype(dtype)  # not square
    before = x.copy()
    out = run(op, x)
    assert out.shape == x.shape and out.dtype == dtype
    assert not np.shares_memory(out, x) and not np.array_equal(out, x)
    assert_array_equal(x, before)
    assert_array_equal(run(op, x, strength=0.0), x)


def test_same_key_same_output_other_key_other_output():
    aug = Augmenter(all_ops(0.5))
    x = np.random.default_rng(7).standard_normal((16, 3, 8, 8)).astype(np.float32)
    before = x.copy()
    assert_array_equal(aug(x, (1, 0, 0, 5)), aug(x.copy(), (1, 0, 0, 5)))
    assert_array_equal(x, before)
    for other in [(2, 0, 0, 5), (1, 1, 0, 5), (1, 0, 1, 5), (1, 0, 0, 6)]:
        assert not np.array_equal(aug(x, (1, 0, 0, 5)), aug(x, other))


# --- taper -------------------------------------------------------------------------------

def test_taper_falls_linearly_to_0_at_the_last_epoch():
    aug = Augmenter([], taper_epochs=4, epochs=10)
    strengths = [aug.strength(epoch) for epoch in range(10)]
    assert strengths == [1.0] * 6 + [0.75, 0.5, 0.25, 0.0]
    assert Augmenter([]).strength(123) == 1.0
    with pytest.raises(ValueError, match="epochs"):
        Augmenter([], taper_epochs=2)


def test_taper_scales_the_magnitudes_rounding_integers_down():
    x = np.zeros((64, 1, 12, 12))
    assert drawn(Crop(padding=4), x, strength=0.6)["padding"] == 2
    assert np.abs(drawn(Crop(padding=4), x, strength=0.6)["dy"]).max() == 2
    assert set(drawn(Cutout(size=5, p=1.0), x, strength=0.5)["size"]) == {2}
    assert np.abs(drawn(Rotate(degrees=30.0), x, strength=0.5)["degrees"]).max() <= 15.0


def test_at_the_last_tapered_epoch_the_pipeline_is_the_identity():
    aug = Augmenter(all_ops(1.0), taper_epochs=3, epochs=5)
    x = np.random.default_rng(8).standard_normal((8, 3, 8, 8)).astype(np.float32)
    assert_array_equal(aug(x, KEY, epoch=4), x)
    assert not np.array_equal(aug(x, KEY, epoch=3), x)


# --- config ------------------------------------------------------------------------------

def test_from_config_builds_the_ops_in_order():
    config = {"noise": {"std": 0.3}, "flip": {"p": 1.0}, "crop": {}}
    aug = from_config(config, taper_epochs=1, epochs=3)
    assert [type(op) for op in aug.ops] == [Noise, Flip, Crop]
    assert aug.ops[0].std == 0.3 and aug.ops[1].p == 1.0 and aug.ops[2].padding == 4
    assert aug.strength(2) == 0.0


def test_from_config_errors_name_the_valid_choices():
    with pytest.raises(ValueError) as error:
        from_config({"flip": {}, "blur": {"sigma": 1}})
    assert "blur" in str(error.value) and all(name in str(error.value) for name in OPS)
    with pytest.raises(ValueError) as error:
        from_config({"crop": {"pading": 4}})
    assert "pading" in str(error.value) and "padding" in str(error.value)
    with pytest.raises(ValueError, match="padding"):
        Crop(padding=-1)
    with pytest.raises(ValueError, match="p must"):
        Flip(p=1.5)


def test_empty_config_returns_an_unchanged_copy():
    x = np.ones((2, 1, 3, 3), np.float32)
    out = from_config({})(x, KEY)
    assert_array_equal(out, x) and out.dtype == x.dtype
    assert not np.shares_memory(out, x)


# --- GPU ---------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_gives_numpys_output_for_the_same_key(dtype):
    import cupy
    aug = Augmenter([op for op in all_ops(0.5) if not isinstance(op, Noise)])  # noise: see below
    x = np.random.default_rng(9).standard_normal((32, 3, 16, 16)).astype(dtype)
    on_gpu = aug(cupy.asarray(x), KEY)
    assert isinstance(on_gpu, cupy.ndarray) and on_gpu.dtype == dtype
    assert_allclose(cupy.asnumpy(on_gpu), aug(x, KEY), atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.gpu
@needs_gpu
def test_gpu_noise_is_deterministic_with_the_requested_std():
    import cupy
    x = cupy.zeros((64, 3, 32, 32), cupy.float32)
    aug = Augmenter([Noise(std=0.1, p=1.0)])
    noise = aug(x, KEY)
    assert_array_equal(cupy.asnumpy(noise), cupy.asnumpy(aug(x, KEY)))
    assert abs(float(noise.mean())) < 5 * 0.1 / np.sqrt(noise.size)
    assert abs(float(noise.std()) / 0.1 - 1) < 0.01

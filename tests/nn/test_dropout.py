"""Dropout (dist_nn/nn/dropout.py): identity in eval (against PyTorch), inverted dropout in
training (masks are random, so their statistics and reproducibility are tested instead)."""
import numpy as np
import pytest

from dist_nn import backend, nn

from . import reference_check as check

CASES = check.cases("dropout")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_gradients_in_training_with_a_fixed_seed():
    # check_gradients re-seeds the streams before every forward: the mask stays fixed
    x = np.random.default_rng(0).standard_normal((4, 6))
    errors = check.assert_gradients(nn.Dropout(0.4), x, seed=3)
    assert list(errors) == ["input"]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_training_drops_about_p_and_scales_the_rest(p):
    x = np.random.default_rng(0).uniform(1.0, 2.0, (200, 500)).astype(np.float32)
    y = nn.Dropout(p).forward(x)
    dropped = y == 0
    # 1e5 Bernoulli(p) draws: the fraction's standard deviation is below 0.0016
    assert abs(dropped.mean() - p) < 0.01
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    assert abs(y.mean() / x.mean() - 1) < 0.02  # unbiased: no rescaling in eval


def test_backward_applies_the_forward_mask():
    layer = nn.Dropout(0.5)
    x = np.ones((50, 40), dtype=np.float32)
    y = layer.forward(x)
    dy = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(dy), dy * y)  # y is the scaled mask here


@pytest.mark.parametrize("train, p", [(False, 0.5), (True, 0.0)], ids=["eval", "p=0"])
def test_identity_in_eval_and_at_p0(train, p):
    layer = nn.Dropout(p).train(train)
    x = np.random.default_rng(0).standard_normal((8, 9)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((8, 9)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_p1_drops_everything():
    layer = nn.Dropout(1.0)
    y = layer.forward(np.ones((3, 4), dtype=np.float32))
    assert not y.any() and np.isfinite(y).all()
    assert not layer.backward(np.ones((3, 4), dtype=np.float32)).any()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_out_of_range(p):
    with pytest.raises(ValueError, match="dropout probability must be in"):
        nn.Dropout(p)


def masks(count, shape=(20, 30)):
    layer = nn.Dropout(0.5)
    return [layer.forward(np.ones(shape, dtype=np.float32)) for _ in range(count)]


def test_masks_differ_between_calls_and_repeat_after_seeding():
    backend.seed(7)
    first = masks(3)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    backend.seed(7)
    for a, b in zip(first, masks(3)):
        np.testing.assert_array_equal(a, b)
    backend.seed(8)
    assert not np.array_equal(first[0], masks(1)[0])


def test_masks_differ_between_ranks():
    backend.seed(7, rank=0)
    rank0 = masks(1)[0]
    backend.seed(7, rank=1)
    assert not np.array_equal(rank0, masks(1)[0])


def test_an_explicit_generator_is_used():
    x = np.ones((20, 30), dtype=np.float32)
    a = nn.Dropout(0.5, rng=np.random.default_rng(5)).forward(x)
    b = nn.Dropout(0.5, rng=np.random.default_rng(5)).forward(x)
    np.testing.assert_array_equal(a, b)

"""Weight initialisers (dist_nn/nn/init.py)."""
import math

import numpy as np
import pytest

from dist_nn import backend, nn
from dist_nn.nn import init

CONV_SHAPE = (128, 64, 3, 3)  # fan_in 576, fan_out 1152; 73728 draws
# the sample standard deviation of n normal draws is within 3 / sqrt(2 n) ~ 0.8% (3 sigma)
STD_RTOL = 3 / math.sqrt(2 * math.prod(CONV_SHAPE))


@pytest.mark.parametrize("shape, fans", [((5, 3), (3, 5)), ((8, 4, 3, 2), (24, 48)),
                                         ((2, 3, 1, 1), (3, 2))])
def test_fans_follow_pytorch(shape, fans):
    assert init.fans(shape) == fans


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.fans((5,))


@pytest.mark.parametrize("scheme, std", [
    (lambda s: init.normal(s), 0.01),
    (lambda s: init.normal(s, std=0.5), 0.5),
    (lambda s: init.he(s), math.sqrt(2 / 576)),
    (lambda s: init.he(s, negative_slope=0.2), math.sqrt(2 / (1.04 * 576))),
    (lambda s: init.xavier(s), math.sqrt(2 / (576 + 1152))),
    (lambda s: init.xavier(s, gain=2.0), 2 * math.sqrt(2 / (576 + 1152))),
], ids=["normal", "normal_0.5", "he", "he_leaky", "xavier", "xavier_gain"])
def test_standard_deviation_matches_the_formula(scheme, std):
    w = scheme(CONV_SHAPE)
    assert w.shape == CONV_SHAPE
    assert abs(w.std() / std - 1) < STD_RTOL
    assert abs(w.mean()) < 3 * std / math.sqrt(w.size)


def test_layers_use_their_scheme():
    linear = nn.Linear(400, 300, init="he")
    assert abs(linear.weight.data.std() / math.sqrt(2 / 400) - 1) < 0.02
    assert not linear.bias.data.any()  # the course's schemes: zero biases
    maxout = nn.Maxout(400, 100, 3)  # xavier by default
    assert abs(maxout.weight.data.std() / math.sqrt(2 / 700) - 1) < 0.02
    conv = nn.Conv2d(16, 32, 3, init="normal")
    assert abs(conv.weight.data.std() / 0.01 - 1) < 0.05


@pytest.mark.parametrize("make, fan_in", [(lambda m: m.Linear(400, 300), 400),
                                          (lambda m: m.Conv2d(64, 128, 3), 576)],
                         ids=["Linear", "Conv2d"])
def test_linear_and_conv_default_to_pytorchs_initialisation(make, fan_in):
    """Weight and bias uniform in +-1/sqrt(fan_in), as torch.nn's defaults draw them: the
    bounds and spreads of PyTorch's own layers (the oracle, when installed)."""
    layer = make(nn)
    bound = 1 / math.sqrt(fan_in)
    for values in (layer.weight.data, layer.bias.data):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    weight = layer.weight.data
    assert abs(weight.std() / (bound / math.sqrt(3)) - 1) < 0.02
    torch = pytest.importorskip("torch")
    reference = make(torch.nn).weight.detach().numpy()
    assert abs(weight.std() / reference.std() - 1) < 0.03
    assert abs(np.abs(weight).max() / np.abs(reference).max() - 1) < 0.01


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weight_has_the_backend_dtype(dtype):
    with backend.using("cpu", dtype):
        assert init.weight((3, 4)).dtype == np.dtype(dtype)
        assert init.zeros(3).dtype == np.dtype(dtype)


@pytest.mark.parametrize("scheme", ["zeros", init.zeros, lambda shape: np.zeros(shape)],
                         ids=["name", "init.zeros", "callable"])
def test_all_zero_weights_are_refused(scheme):
    with pytest.raises(ValueError, match="zero"):
        init.weight((4, 3), scheme)
    with pytest.raises(ValueError, match="zero"):
        nn.Linear(3, 4, init=scheme)


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match=r"unknown init 'glorot'; choose one of \['he', 'normal', "
                                         r"'pytorch', 'xavier'\]"):
        init.weight((4, 3), "glorot")


def test_a_callable_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"init returned shape \(3, 4\), expected \(4, 3\)"):
        init.weight((4, 3), lambda shape: np.ones(shape[::-1]))


def test_a_callable_scheme_is_used():
    w = init.weight((2, 3), lambda shape: np.full(shape, 0.5))
    np.testing.assert_array_equal(w, np.full((2, 3), 0.5, dtype=np.float32))


def test_draws_repeat_after_seeding_and_agree_across_ranks():
    backend.seed(3, rank=0)
    first = [init.weight((5, 4)), init.weight((5, 4))]
    assert not np.array_equal(*first)
    backend.seed(3, rank=1)  # every rank must start from the same weights
    second = [init.weight((5, 4)), init.weight((5, 4))]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    backend.seed(4)
    assert not np.array_equal(first[0], init.weight((5, 4)))


def test_a_weight_beyond_the_free_memory_is_refused_before_it_is_drawn():
    with pytest.raises(ValueError, match=r"a weight of shape \(1000000, 1000000\) needs "
                                         r"14901.2 GiB with its gradient and optimizer "
                                         r"state, more than the .* GiB free"):
        nn.Linear(10**6, 10**6)

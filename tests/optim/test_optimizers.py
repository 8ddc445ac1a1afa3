"""Optimizers against torch.optim (fixtures, and live when torch is installed)."""
import numpy as np
import pytest

from dist_nn import backend, optim
from dist_nn.optim.flat import FlatParameters, FlatShard
from dist_nn.nn import Linear, Parameter, Sequential, kernels
from tests.reference import fixtures
from tests.reference import optim as reference

TORCH = fixtures.torch_or_none()
needs_torch = pytest.mark.skipif(TORCH is None, reason="live reference needs torch")


def assert_trajectories_equal(ours, theirs):
    for key, expected in theirs.items():
        np.testing.assert_allclose(ours[key], expected, rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("case", list(reference.CASES))
def test_matches_torch_fixture(case):
    stored = fixtures.load("optim")[case]
    with backend.using(dtype="float64"):
        ours = reference.our_outputs(case, stored)
    assert_trajectories_equal(ours, {k: v for k, v in stored.items() if k.startswith("trajectory")})


@needs_torch
@pytest.mark.parametrize("case", list(reference.CASES))
def test_matches_torch_live(case):
    inputs = reference.make_inputs(seed=1000 + list(reference.CASES).index(case))
    with backend.using(dtype="float64"):
        ours = reference.our_outputs(case, inputs)
    assert_trajectories_equal(ours, reference.torch_outputs(TORCH, case, inputs))


@pytest.mark.skipif(kernels.numba is None, reason="numba is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [c for c in reference.CASES if reference.CASES[c][0] is optim.SGD])
def test_compiled_sgd_equals_numpy(case, dtype):
    """SGD's one-pass compiled step against its NumPy formula, on every SGD case."""
    stored = fixtures.load("optim")[case]
    results = []
    for compiled in (False, True):
        with backend.using(dtype=dtype), kernels.using(compiled):
            results.append(reference.our_outputs(case, stored))
    tolerance = 1e-6 if dtype == "float32" else 1e-14
    for key, expected in results[0].items():
        np.testing.assert_allclose(results[1][key], expected, rtol=tolerance, atol=tolerance,
                                   err_msg=key)


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_an_empty_shard_still_creates_the_state(name):
    """A ZeRO rank whose shard is empty (a small bucket on many ranks) steps too and holds
    the same (empty) state buffers as the others: their state is gathered collectively."""
    params = [Parameter(np.ones(9)), Parameter(np.ones(3), weight_decay=False)]
    flat = FlatParameters(params)
    kwargs = dict(momentum=0.9) if name == "sgd" else {}
    names = []
    for pieces in ([(0, 3)], [(12, 12)]):
        for compiled in (False, True):
            with kernels.using(compiled):
                opt = optim.OPTIMIZERS[name](FlatShard(flat, pieces), lr=0.1, **kwargs)
                opt.step()
            names.append(sorted(opt.buffers))
    assert all(n == names[0] for n in names) and (names[0] or name == "sgd")


def test_trajectories_move():
    # the comparison above would pass trivially if nothing moved
    stored = fixtures.load("optim")["adam"]
    assert np.abs(stored["trajectory.weight"][-1] - stored["init.weight"]).min() > 1e-3


def make_model():
    with backend.using(dtype="float64"):
        backend.seed(0)
        return Sequential(Linear(3, 4), Linear(4, 2))


def test_weight_decay_skips_biases():
    w = Parameter(np.ones(3))
    b = Parameter(np.ones(3), weight_decay=False)
    opt = optim.SGD([w, b], lr=0.1, weight_decay=0.5, l1=0.2)
    opt.step()  # zero gradients: only the penalties move the weight
    np.testing.assert_allclose(w.data, 1 - 0.1 * (0.5 + 0.2))
    np.testing.assert_array_equal(b.data, 1.0)


def test_state_dict_resumes_exactly():
    def run(steps, opt_from=None):
        model = make_model()
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
        if opt_from is not None:
            model_state, opt_state = opt_from
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
        x = np.linspace(-1, 1, 15).reshape(5, 3)
        for _ in range(steps):
            opt.zero_grad()
            y = model.forward(x)
            model.backward(y - 0.5)
            opt.step()
        return model, opt

    straight, _ = run(10)
    half, opt = run(5)
    resumed, _ = run(5, (half.state_dict(), opt.state_dict()))
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_state_dict_refuses_a_different_model():
    opt = optim.Adam(make_model().parameters())
    opt.step()
    other = optim.Adam([Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match="trainable parameters"):
        other.load_state_dict(opt.state_dict())


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optim.SGD(make_model().parameters(), lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(make_model().parameters(), lr=0.1, nesterov=True)
    frozen = Parameter(np.ones(2), requires_grad=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        optim.SGD([frozen], lr=0.1)

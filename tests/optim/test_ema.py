"""WeightEMA (dist_nn/optim/ema.py): the average of parameters and BatchNorm buffers."""
import numpy as np

from dist_nn import backend, nn, optim


def model_and_flat():
    with backend.using("cpu", "float64"):
        backend.seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    return model, optim.FlatParameters(model.parameters())


def step(model, flat, rng):
    x = rng.standard_normal((8, 3))
    model.forward(x)  # moves the running statistics
    flat.data -= 0.1 * rng.standard_normal(flat.size)


def test_average_of_parameters_and_buffers_matches_the_recurrence():
    model, flat = model_and_flat()
    rng = np.random.default_rng(0)
    ema = optim.WeightEMA(model, flat, decay=0.9)
    expected = {k: v.copy() for k, v in model.state_dict().items()}
    for _ in range(5):
        step(model, flat, rng)
        ema.update()
        for name, value in model.state_dict().items():
            expected[name] = value if value.dtype.kind == "i" else \
                0.9 * expected[name] + 0.1 * value
    averaged = ema.state_dict()
    for name, value in expected.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(averaged[name], value, rtol=1e-13, err_msg=name)
    assert not np.allclose(averaged["1.running_mean"], model.state_dict()["1.running_mean"])


def test_applied_swaps_in_and_back_and_state_round_trips():
    model, flat = model_and_flat()
    rng = np.random.default_rng(1)
    ema = optim.WeightEMA(model, flat, decay=0.5)
    step(model, flat, rng)
    ema.update()
    live = model.state_dict()
    with ema.applied():
        inside = model.state_dict()
    after = model.state_dict()
    for name in live:
        np.testing.assert_array_equal(after[name], live[name])
        np.testing.assert_array_equal(inside[name], ema.state_dict()[name])
    other = optim.WeightEMA(*model_and_flat(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    for name, value in ema.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)

"""The gradient check never calls correct code wrong, and still catches a wrong backward:
entries on a kink or tie of the forward (ReLU at 0, equal values in a max-pool window) are
left out and counted."""
import numpy as np

from dist_nn import backend, nn
from dist_nn.nn.gradcheck import check_gradients


def flat_background(seed=0):
    """Images that are 0 but for one bright stroke: max-pool windows full of ties."""
    x = np.zeros((2, 1, 8, 8))
    x[:, :, 2:5, 3] = 1.0
    return x + np.random.default_rng(seed).normal(0, 1e-3, x.shape) * (x > 0)


def test_ties_in_max_pool_and_relu_at_zero_are_left_out_not_called_wrong():
    with backend.using(dtype="float64"):
        errors = check_gradients(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), flat_background())
    assert errors["input"] < 1e-7, errors
    assert errors.kinks["input"] > 0  # the flat background: ties and ReLU's kink at 0


class OffByAPercent(nn.ReLU):
    def backward(self, dy):
        return super().backward(dy) * 1.01


def test_a_wrong_backward_is_still_caught_beside_the_kinks():
    with backend.using(dtype="float64"):
        errors = check_gradients(nn.Sequential(OffByAPercent(), nn.MaxPool2d(2)),
                                 flat_background())
    assert errors["input"] > 1e-3, errors


def test_smooth_layers_have_no_kinks():
    rng = np.random.default_rng(1)
    with backend.using(dtype="float64"):
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                              nn.Linear(3 * 5 * 5, 4))
        errors = check_gradients(model, rng.normal(size=(2, 2, 5, 5)))
    assert max(errors.values()) < 1e-7 and not any(errors.kinks.values()), errors

"""SoftmaxCrossEntropy and MSELoss (dist_nn/nn/loss.py): loss value and d loss / d prediction."""
import warnings

import numpy as np
import pytest

from dist_nn import nn
from tests.reference import fixtures
from tests.reference import recipe_check as check_recipe

from . import reference_check as check

CASES = check.cases("loss")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


HUGE_LOGITS = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4], [5e3, 1e4, 0.0]])
LABELS = np.array([1, 2, 0, 1])
# -log softmax[label] row by row: 1e4; log 2 (two equal maxima); log 3 (all equal); 0 (up to
# exp(-5e3), far below rounding)
HUGE_LOSS = (1e4 + np.log(2) + np.log(3) + 0.0) / 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    loss = nn.SoftmaxCrossEntropy()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = loss.forward(HUGE_LOGITS.astype(dtype), LABELS)
        grad = loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all()
    np.testing.assert_allclose(float(value), HUGE_LOSS, rtol=1e-6 if dtype == np.float32 else 1e-14)
    expected_probs = np.array([[1, 0, 0], [0, .5, .5], [1 / 3] * 3, [0, 1, 0]])
    expected_grad = (expected_probs - np.eye(3)[LABELS]) / 4
    np.testing.assert_allclose(grad, expected_grad, atol=1e-7)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)
    torch = fixtures.torch_or_none()
    if torch is not None:
        logits = torch.tensor(HUGE_LOGITS, requires_grad=True)
        reference = torch.nn.CrossEntropyLoss()(logits, torch.tensor(LABELS))
        reference.backward()
        np.testing.assert_allclose(float(value), reference.item(), rtol=1e-6)
        np.testing.assert_allclose(grad, logits.grad.numpy(), atol=1e-7)


@pytest.mark.parametrize("labels", [[0, 3, 1], [-1, 0, 1]], ids=["too_large", "negative"])
def test_labels_out_of_range(labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) for 3 classes"):
        nn.SoftmaxCrossEntropy().forward(np.zeros((3, 3)), np.array(labels))


@pytest.mark.parametrize("logits, labels", [((3, 4, 2), (3,)), ((3, 4), (4,)), ((3, 4), (3, 1))])
def test_cross_entropy_shape_mismatch(logits, labels):
    with pytest.raises(ValueError, match="SoftmaxCrossEntropy expects logits"):
        nn.SoftmaxCrossEntropy().forward(np.zeros(logits), np.zeros(labels, dtype=np.int64))


def test_mse_shape_mismatch():
    with pytest.raises(ValueError, match=r"MSELoss: prediction \(4, 3\) and target \(4, 1\)"):
        nn.MSELoss().forward(np.zeros((4, 3)), np.zeros((4, 1)))


def test_mse_is_the_mean_over_all_elements():
    loss = nn.MSELoss()
    assert loss.forward(np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((2, 2))) == 7.5
    np.testing.assert_array_equal(loss.backward(), [[0.5, 1.0], [1.5, 2.0]])


@pytest.mark.parametrize("loss, target", [
    (nn.SoftmaxCrossEntropy(), np.array([0, 2, 1])),
    (nn.MSELoss(), np.arange(12.0).reshape(3, 4) / 10),
])
def test_mean_over_divides_the_sum_by_that_many_samples(loss, target):
    """A rank's share of a global mean: the sum of its losses over mean_over samples."""
    prediction = np.linspace(-1, 1, 12).reshape(3, 4)
    mean = loss.forward(prediction, target)
    grad = loss.backward()
    share = loss.forward(prediction, target, mean_over=7)
    np.testing.assert_allclose(share, mean * 3 / 7)
    np.testing.assert_allclose(loss.backward(), grad * 3 / 7)


@check_recipe.SOURCES
def test_label_smoothing_matches_torch(source):
    """SoftmaxCrossEntropy(label_smoothing=e) against cross_entropy(..., label_smoothing=e),
    value and gradient, for two values of e."""
    check_recipe.compare(source, "smoothing", 1e-12)


@pytest.mark.parametrize("e", [0.1, 0.5])
def test_label_smoothing_gradient_by_central_differences(e):
    rng = np.random.default_rng(3)
    check.assert_gradients(nn.Sequential(), rng.standard_normal((5, 4)),
                           loss=nn.SoftmaxCrossEntropy(label_smoothing=e),
                           target=rng.integers(0, 4, 5))


def test_label_smoothing_out_of_range():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        nn.SoftmaxCrossEntropy(label_smoothing=1.5)


@pytest.mark.parametrize("loss, target", [
    (nn.SoftmaxCrossEntropy(label_smoothing=0.1), np.array([0, 2, 1])),
    (nn.MSELoss(), np.zeros((3, 4), dtype=np.float32)),
])
def test_half_precision_predictions_compute_in_float32(loss, target):
    """Mixed precision: half-precision logits are cast up; the loss and its gradient are
    float32 and equal to the float32 computation on the same (rounded) values."""
    prediction = np.linspace(-3, 3, 12).reshape(3, 4).astype(np.float16)
    value, grad = loss.forward(prediction, target), loss.backward()
    assert grad.dtype == np.float32
    np.testing.assert_array_equal(loss.forward(prediction.astype(np.float32), target), value)
    np.testing.assert_array_equal(loss.backward(), grad)

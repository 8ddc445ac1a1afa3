"""clip_grad_norm (dist_nn/optim/clip.py) against torch.nn.utils.clip_grad_norm_."""
import numpy as np
import pytest

from dist_nn import optim
from dist_nn.nn import Parameter
from tests.reference import recipe_check as check


@check.SOURCES
def test_matches_torch_on_a_models_gradients(source):
    """An MLP's cross-entropy gradients, clipped to 0.5 (clips) and to 100 (untouched)."""
    ours, _ = check.compare(source, "clip", 1e-12)
    assert ours["clip0.5.norm"] > 0.5 * 1.5  # the case really clips


def flat_and_params():
    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal(s)) for s in ((3, 4), (4,), (2, 3))]
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    expected = np.sqrt(sum((p.grad ** 2).sum() for p in params))
    return optim.FlatParameters(params), params, expected


@pytest.mark.parametrize("as_flat", [True, False], ids=["flat", "params"])
def test_flat_buffer_and_parameter_list_agree(as_flat):
    flat, params, expected = flat_and_params()
    norm = optim.clip_grad_norm(flat if as_flat else params, 1.0)
    np.testing.assert_allclose(norm, expected, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(flat.grad), 1.0 * expected / (expected + 1e-6),
                               rtol=1e-14)


def test_nonfinite_gradient_gives_a_nonfinite_norm():
    flat, _, _ = flat_and_params()
    flat.grad[2] = np.inf
    with np.errstate(invalid="ignore"):  # Inf * 0: torch's clipping leaves NaN there too
        assert optim.clip_grad_norm(flat, 1.0) == np.inf


def test_max_norm_must_be_positive():
    flat, _, _ = flat_and_params()
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        optim.clip_grad_norm(flat, 0.0)

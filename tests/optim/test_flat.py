"""Flat parameter and gradient buffers."""
import numpy as np
import pytest

from dist_nn import optim
from dist_nn.nn import Parameter
from tests.optim.test_optimizers import make_model


def test_parameters_become_views_of_flat_buffers():
    model = make_model()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = optim.SGD(model.parameters(), lr=0.1)
    flat = opt.flat
    assert flat.size == sum(p.size for p in model.parameters())
    # reverse registration order: the last layer's bias first, as backward produces them
    assert [p.name for p in flat.params] == ["bias", "weight", "bias", "weight"]
    assert flat.params[0] is model[1].bias
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
        assert np.shares_memory(p.data, flat.data) and np.shares_memory(p.grad, flat.grad)
    flat.data[:] = 7.0
    assert (model[0].weight.data == 7.0).all()
    np.testing.assert_array_equal(flat.decay_mask[:2], 0.0)  # biases are not decayed
    np.testing.assert_array_equal(flat.decay_mask[2:10], 1.0)


def test_frozen_parameters_are_left_out():
    model = make_model()
    model[0].weight.requires_grad = False
    frozen = model[0].weight.data.copy()
    opt = optim.SGD(model.parameters(), lr=0.5)
    assert model[0].weight not in opt.flat.params
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(model[0].weight.data, frozen)
    assert not np.allclose(model[0].bias.data, 0.0)


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="mix dtypes"):
        optim.FlatParameters([Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(2))])

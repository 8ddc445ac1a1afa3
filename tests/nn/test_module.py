"""Parameter and Module (dist_nn/nn/module.py): naming, state dicts, modes."""
import numpy as np
import pytest

from dist_nn import backend, nn
from tests.reference import fixtures

SMALL_CNN_STATE = [  # name, shape: PyTorch's order (module by module, parameters then buffers)
    ("0.weight", (4, 3, 3, 3)), ("0.bias", (4,)),
    ("1.weight", (4,)), ("1.bias", (4,)), ("1.running_mean", (4,)), ("1.running_var", (4,)),
    ("1.num_batches_tracked", ()),
    ("5.weight", (2, 16)), ("5.bias", (2,)),
]


def small_cnn(nn):
    """For dist_nn.nn or torch.nn alike."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 2))


def test_state_dict_names_order_and_shapes_follow_pytorch():
    state = small_cnn(nn).state_dict()
    assert [(name, value.shape) for name, value in state.items()] == SMALL_CNN_STATE
    torch = fixtures.torch_or_none()
    if torch is not None:
        theirs = small_cnn(torch.nn).state_dict()
        assert [(n, tuple(v.shape)) for n, v in theirs.items()] == SMALL_CNN_STATE


def test_named_parameters_and_buffers():
    model = small_cnn(nn)
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
    assert [p.name for p in model.parameters()] == ["weight", "bias"] * 3
    assert [n for n, _ in model.named_buffers()] == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert model.buffers()[0] is model[1].running_mean


def test_state_dict_is_a_host_copy():
    model = small_cnn(nn)
    state = model.state_dict()
    state["0.weight"][...] = 7
    assert not (model[0].weight.data == 7).any()


def test_weights_move_between_torch_and_us_both_ways():
    torch = fixtures.torch_or_none()
    if torch is None:
        pytest.skip("PyTorch is not installed")
    with backend.using("cpu", "float64"):
        ours = small_cnn(nn)
    theirs = small_cnn(torch.nn).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, theirs.state_dict()[name].numpy())
    ours[0].weight.data += 1.0
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    np.testing.assert_array_equal(theirs[0].weight.detach().numpy(), ours[0].weight.data)


def test_load_reports_missing_unexpected_and_mismatched_keys():
    model = small_cnn(nn)
    state = model.state_dict()
    del state["1.running_var"]
    state["6.weight"] = np.zeros(3)
    state["5.weight"] = np.zeros((3, 16))
    with pytest.raises(ValueError) as raised:
        model.load_state_dict(state)
    message = str(raised.value)
    assert "missing keys: 1.running_var" in message
    assert "unexpected keys: 6.weight" in message
    assert "shape mismatches: 5.weight: checkpoint (3, 16) vs model (2, 16)" in message


def test_non_strict_load_ignores_key_sets_but_not_shapes():
    model, other = small_cnn(nn), small_cnn(nn)
    state = other.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(2)
    model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model[0].weight.data, other[0].weight.data)
    state["0.weight"] = np.zeros((4, 3, 3))
    with pytest.raises(ValueError, match=r"shape mismatches: 0.weight"):
        model.load_state_dict(state, strict=False)


def test_load_writes_in_place_so_views_stay_views():
    """Optimizers may hold parameters as views of one flat buffer: loading must fill it."""
    model = small_cnn(nn)
    flat = np.zeros(sum(p.size for p in model.parameters()), dtype=np.float32)
    offset = 0
    for p in model.parameters():
        p.data = flat[offset:offset + p.size].reshape(p.shape)
        offset += p.size
    arrays = [p.data for p in model.parameters()] + model.buffers()
    state = {k: np.full(v.shape, 0.5) if v.dtype.kind == "f" else v
             for k, v in small_cnn(nn).state_dict().items()}
    model.load_state_dict(state)
    assert (flat == 0.5).all()
    after = [p.data for p in model.parameters()] + model.buffers()
    assert all(a is b for a, b in zip(arrays, after))
    assert all(np.shares_memory(p.data, flat) for p in model.parameters())
    assert model[0].weight.data.dtype == np.float32  # cast to the target's dtype


def test_train_and_eval_are_recursive():
    model = nn.Sequential(nn.Dropout(0.5), nn.Residual(nn.Sequential(nn.BatchNorm1d(3))))
    modules = [m for _, m in model.named_modules()]
    assert len(modules) == 5 and all(m.training for m in modules)
    assert model.eval() is model
    assert not any(m.training for m in modules)
    assert model.train() is model and all(m.training for m in modules)


def test_zero_grad():
    model = small_cnn(nn)
    for p in model.parameters():
        p.grad += 1.0
    model.zero_grad()
    assert not any(p.grad.any() for p in model.parameters())


def test_parameter():
    p = nn.Parameter(np.ones((2, 3), dtype=np.float32), weight_decay=False)
    assert p.shape == (2, 3) and p.size == 6 and p.grad.dtype == np.float32
    assert not p.grad.any() and p.requires_grad and not p.weight_decay


def test_repr_shows_the_structure():
    text = repr(small_cnn(nn))
    assert text.startswith("Sequential(\n  (0): Conv2d(3, 4, kernel_size=(3, 3)")
    assert "(1): BatchNorm2d(4, eps=1e-05, momentum=0.1)" in text


def test_backward_hooks_run_after_the_module_gradients_are_final():
    layer = nn.Linear(3, 2)
    seen = []
    hook = lambda m: seen.append(m.weight.grad.copy())  # noqa: E731
    layer.add_backward_hook(hook)
    x = np.ones((4, 3), dtype=np.float32)
    layer.forward(x)
    dx = layer.backward(np.ones((4, 2), dtype=np.float32))
    assert dx.shape == x.shape and len(seen) == 1
    np.testing.assert_array_equal(seen[0], layer.weight.grad)
    layer.remove_backward_hook(hook)
    assert "backward" not in vars(layer)  # the class's backward again
    layer.backward(np.ones((4, 2), dtype=np.float32))
    assert len(seen) == 1


def test_forward_hooks_see_the_output():
    layer = nn.ReLU()
    seen = []
    hook = lambda m, y: seen.append((m, y.copy()))  # noqa: E731
    layer.add_forward_hook(hook)
    y = layer.forward(np.array([-1.0, 2.0]))
    assert seen[0][0] is layer and np.array_equal(seen[0][1], y)
    layer.remove_forward_hook(hook)
    layer.forward(np.array([3.0]))
    assert len(seen) == 1 and "forward" not in vars(layer)


def test_no_grad_keeps_nothing_for_backward_and_says_so():
    model = small_cnn(nn)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    model.forward(x)  # a training forward keeps the arrays backward needs
    assert model[0].x is x and model[1].centred is not None
    assert nn.grad_enabled()
    with nn.no_grad():
        assert not nn.grad_enabled()
        y = model.forward(x)
    assert nn.grad_enabled()
    np.testing.assert_allclose(y, model.forward(x), rtol=1e-6)  # the same values
    with nn.no_grad():
        model.forward(x)
    assert model[0].x is None and model[1].centred is None and model[2].y is None
    with pytest.raises(RuntimeError, match=r"Linear.backward after a forward inside nn.no_grad"):
        model.backward(np.ones((2, 2), dtype=np.float32))


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(ValueError):
        with nn.no_grad():
            raise ValueError("inside")
    assert nn.grad_enabled()

"""Sequential and Residual (dist_nn/nn/container.py)."""
import numpy as np
import pytest

from dist_nn import backend, nn

from . import reference_check as check

CASES = check.cases("container")
# against PyTorch (stored and live), in float32, and by central differences
test_matches_torch_fixture, test_matches_torch_live, test_float32_matches, \
    test_gradients = check.reference_tests(CASES)


def test_sequential_children_are_numbered_in_order():
    layers = [nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)]
    model = nn.Sequential(*layers)
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    assert len(model) == 3 and list(model) == layers
    assert model[2] is layers[2] and model[-1] is layers[2]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_empty_sequential_is_the_identity():
    x = np.arange(6.0).reshape(2, 3)
    model = nn.Sequential()
    assert model.forward(x) is x and model.backward(x) is x


def test_residual_adds_the_identity_path():
    with backend.using("cpu", "float64"):
        branch = nn.Linear(3, 3)
        residual = nn.Residual(branch)
    x = np.random.default_rng(0).standard_normal((2, 3))
    dy = np.random.default_rng(1).standard_normal((2, 3))
    np.testing.assert_allclose(residual.forward(x), x @ branch.weight.data.T + branch.bias.data + x)
    np.testing.assert_allclose(residual.backward(dy), dy @ branch.weight.data + dy)
    assert [name for name, _ in residual.named_children()] == ["branch"]


def test_residual_names_its_children_branch_and_shortcut():
    residual = nn.Residual(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)),
                           nn.Conv2d(2, 3, 1, bias=False))
    assert list(residual.state_dict()) == [
        "branch.0.weight", "branch.0.bias", "branch.1.weight", "branch.1.bias",
        "branch.1.running_mean", "branch.1.running_var", "branch.1.num_batches_tracked",
        "shortcut.weight"]



def test_sequential_takes_names_from_a_dict_as_torch_does():
    model = nn.Sequential({"features": nn.Linear(3, 4), "act": nn.ReLU(), "head": nn.Linear(4, 2)})
    assert [name for name, _ in model.named_children()] == ["features", "act", "head"]
    assert list(model.state_dict()) == ["features.weight", "features.bias", "head.weight",
                                        "head.bias"]


def test_sequential_refuses_a_child_that_is_not_a_module():
    with pytest.raises(TypeError, match="Sequential child '1' is not a Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


@pytest.mark.parametrize("first", ["linear", "conv"])
def test_skip_input_grad_keeps_parameter_gradients(first):
    """With skip_input_grad the first parametrised layer (here behind a parameter-free
    Flatten or directly) returns no input gradient, and every parameter gradient is unchanged."""
    def build():
        backend.seed(4)
        if first == "linear":
            return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 5), nn.ReLU()),
                                 nn.Linear(5, 3))
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 2 * 2, 3))
    x = np.random.default_rng(0).standard_normal((6, 3, 2, 2)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    full, skipping = build(), build()
    full.forward(x)
    assert full.backward(dy).shape == x.shape
    skipped = nn.skip_input_grad(skipping)
    assert isinstance(skipped, nn.Linear if first == "linear" else nn.Conv2d)
    skipping.forward(x)
    assert skipping.backward(dy) is None
    for (name, a), (_, b) in zip(full.named_parameters(), skipping.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)


def test_skip_input_grad_leaves_residual_starts_alone():
    model = nn.Sequential(nn.Residual(nn.Sequential(nn.Linear(3, 3))), nn.Linear(3, 2))
    assert nn.skip_input_grad(model) is None
    assert all(m.input_grad for _, m in model.named_modules())

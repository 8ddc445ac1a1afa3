"""Model zoo: architecture facts, and whole models against their PyTorch twins."""
import numpy as np
import pytest

from dist_nn import backend, models, nn
from dist_nn.models.resnet import PadShortcut
from dist_nn.nn.gradcheck import check_gradients

try:
    import torch
    from dist_nn import torch_interop
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch twin needs torch")

CIFAR = (3, 32, 32)


@pytest.mark.parametrize("name, count", [
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018),  # He et al.: 0.27M, 0.46M, 0.85M
    ("resnet18", 11_173_962),
    # 3*9*32 + 2*32 + 32*9*64 + 2*64 + (4096+1)*256 + (256+1)*10 (BN convs have no bias)
    ("cnn", 864 + 64 + 18432 + 128 + 1048832 + 2570),
])
def test_parameter_counts(name, count):
    model = models.build(name, CIFAR, 10)
    assert sum(p.size for p in model.parameters()) == count


def test_resnet20_layout():
    model = models.build("resnet20", CIFAR, 10)
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer3.2.conv2.weight" in names and names[-2:] == ["linear.weight", "linear.bias"]
    convs = [n for n in names if n.endswith(("conv1.weight", "conv2.weight"))]
    assert len(convs) == 19  # 19 convolutions + the linear layer = 20 weight layers
    shortcuts = [m for _, m in model.named_modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2  # entering stages 2 and 3


def test_unknown_model_and_bad_options():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*choose one of"):
        models.build("vgg", CIFAR, 10)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.resnet.cifar_resnet(21, CIFAR, 10)
    with pytest.raises(ValueError, match="too small"):
        models.build("cnn", (1, 3, 3), 10)
    with pytest.raises(ValueError, match="unknown activation"):
        models.build("mlp", (4,), 2, activation="swish")


def test_parameter_names_do_not_depend_on_dropout():
    names = [list(models.build("mlp", (8,), 3, dropout=p).state_dict()) for p in (0.0, 0.5)]
    assert names[0] == names[1]


def test_small_resnet_gradients():
    with backend.using(dtype="float64"):
        backend.seed(0)
        model = models.resnet._resnet((2, 6, 6), 3, (2, 4), 1, "pad", None)
        x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
        errors = check_gradients(model, x, max_entries=20)
    assert max(errors.values()) < 1e-6, errors


MODEL_CASES = [
    ("mlp", (1, 8, 8), dict(hidden=(16, 12), dropout=0.5)),
    ("mlp", (5,), dict(hidden=(7,), activation="tanh", batch_norm=True)),
    ("mlp", (6,), dict(hidden=(5, 4), maxout_pieces=3, activation="elu")),
    ("cnn", (3, 12, 12), dict(channels=(4, 6), hidden=10)),
    ("resnet20", (3, 16, 16), {}),
    ("resnet18", (3, 8, 8), {}),
]


@needs_torch
@pytest.mark.parametrize("name, shape, options", MODEL_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_whole_model_matches_torch(name, shape, options, training):
    """Forward, input gradient, every parameter gradient and the BatchNorm buffers of a whole
    model equal those of its PyTorch twin (float64; dropout only in eval mode)."""
    with backend.using(dtype="float64"):
        backend.seed(1)
        model = models.build(name, shape, 4, **options)
        rng = np.random.default_rng(2)
        if not training:  # non-trivial running statistics
            for _, m in model.named_modules():
                if hasattr(m, "running_var"):
                    m.running_mean[...] = rng.standard_normal(m.running_mean.shape)
                    m.running_var[...] = rng.uniform(0.5, 2, m.running_var.shape)
            model.eval()
        else:
            for _, m in model.named_modules():
                if hasattr(m, "p"):
                    m.p = 0.0  # random masks cannot match torch's
        twin = torch_interop.to_torch_module(model)
        x = rng.standard_normal((5,) + shape)
        dy = rng.standard_normal((5, 4))

        y = model.forward(x)
        dx = model.backward(dy)
        tx = torch.tensor(x, requires_grad=True)
        ty = twin(tx)
        ty.backward(torch.tensor(dy))

        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        theirs = dict(twin.named_parameters())
        for pname, p in model.named_parameters():
            np.testing.assert_allclose(p.grad, theirs[pname].grad.numpy(), rtol=1e-9,
                                       atol=1e-12, err_msg=pname)
        torch_state = torch_interop.from_torch(twin.state_dict())
        for bname, b in model.named_buffers():
            np.testing.assert_allclose(b, torch_state[bname], rtol=1e-12, atol=1e-14,
                                       err_msg=bname)


@needs_torch
def test_state_dict_round_trip_through_torch():
    backend.seed(3)
    model = models.build("resnet20", CIFAR, 10)
    twin = torch_interop.to_torch_module(model)
    for p in twin.parameters():  # change every weight on the torch side
        p.data.mul_(-2.0)
    again = models.build("resnet20", CIFAR, 10)
    again.load_state_dict(torch_interop.from_torch(twin.state_dict()))
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        np.testing.assert_allclose(b.data, -2.0 * a.data, err_msg=name)
    # the "module." prefix of DistributedDataParallel checkpoints is dropped
    wrapped = {"module." + k: v for k, v in twin.state_dict().items()}
    assert set(torch_interop.from_torch(wrapped)) == set(model.state_dict())


@pytest.mark.parametrize("name", ["cnn", "resnet20"])
def test_evaluation_under_no_grad_keeps_no_activations(name):
    """After a training step every layer holds its backward state; a no_grad forward (as
    dist_nn.evaluate runs) drops it: no module keeps an array with a batch dimension."""
    model = models.build(name, (3, 16, 16), 4)
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)

    def kept_batch_arrays():
        return [f"{prefix}.{key}" for prefix, m in model.named_modules()
                for key, value in vars(m).items()
                if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == len(x)]
    model.forward(x)
    assert kept_batch_arrays()
    with nn.no_grad():
        model.eval().forward(x)
    assert kept_batch_arrays() == []

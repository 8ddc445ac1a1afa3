"""Layer cases: every layer of dist_nn.nn against the torch.nn module with the same arguments.

A case's `build(nn)` is called twice: with `dist_nn.nn` for our module and with `TorchLayers`
(torch.nn plus the few layers torch lacks, written with our parameter names) for PyTorch's, so
the constructor signatures are compared too. Our module is built in float64 and its state
dict, with every parameter and statistic perturbed to non-trivial values, is loaded into the
torch module with strict=True: the names and shapes must be PyTorch's.

Stored per case: inputs `x`, `dy` (upstream gradient; losses have `target` instead) and
`param.<name>` (the state dict: parameters and buffers), and PyTorch's outputs `y`, `dx`,
`grad.<parameter>` and `buffer.<name>` (the buffers after the forward). For a loss, `y` is the
loss value and `dx` its gradient with respect to the prediction.
"""
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dist_nn import backend, nn

FIXTURE_SEED = 0


@dataclass(frozen=True)
class Case:
    name: str
    module: str              # the dist_nn/nn file it tests (tests/nn/test_<module>.py)
    build: Callable          # build(nn) -> module, for nn = dist_nn.nn or TorchLayers
    shape: tuple             # input shape
    train: bool = False
    draw: str = "normal"     # "normal" | "distinct": distinct values, |x| >= 0.1 (no kinks, ties)
    target: str = None       # losses only: "labels" | "values"
    num_batches_tracked: int = None  # overrides the stored counter (BatchNorm, momentum=None)

    def __str__(self):
        return self.name


def _conv_bn_relu(nn, c_in, c_out, stride):
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU()]


CASES = [
    # linear.py
    Case("linear", "linear", lambda nn: nn.Linear(5, 3), (4, 5)),
    Case("linear_no_bias", "linear", lambda nn: nn.Linear(6, 4, bias=False), (3, 6)),
    Case("linear_batch1", "linear", lambda nn: nn.Linear(7, 2), (1, 7)),
    Case("maxout", "linear", lambda nn: nn.Maxout(5, 3, 4), (6, 5)),
    Case("maxout_no_bias", "linear", lambda nn: nn.Maxout(4, 2, 3, bias=False), (3, 4)),
    # conv.py
    Case("conv", "conv", lambda nn: nn.Conv2d(3, 4, 3), (2, 3, 7, 5)),
    Case("conv_stride2_pad1", "conv", lambda nn: nn.Conv2d(3, 4, 3, stride=2, padding=1),
         (2, 3, 7, 5)),
    Case("conv_kernel3x2", "conv",
         lambda nn: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 6, 5)),
    Case("conv_kernel2x3_stride1", "conv", lambda nn: nn.Conv2d(3, 2, (2, 3), padding=(0, 1)),
         (2, 3, 5, 6)),
    Case("conv_1x1_pad1", "conv", lambda nn: nn.Conv2d(2, 2, 1, padding=1), (2, 2, 3, 4)),
    Case("conv_no_bias", "conv", lambda nn: nn.Conv2d(3, 2, 3, padding=1, bias=False),
         (2, 3, 5, 5)),
    Case("conv_batch1", "conv", lambda nn: nn.Conv2d(2, 3, 3, stride=2), (1, 2, 7, 7)),
    Case("conv_1x1", "conv", lambda nn: nn.Conv2d(4, 3, 1), (2, 4, 3, 5)),
    Case("conv_1x1_stride2", "conv", lambda nn: nn.Conv2d(3, 2, 1, stride=2, bias=False),
         (2, 3, 5, 4)),
    Case("conv_stride_remainder", "conv", lambda nn: nn.Conv2d(2, 2, 2, stride=3, padding=1),
         (2, 2, 8, 7)),
    # pooling.py
    Case("maxpool_k2s2", "pooling", lambda nn: nn.MaxPool2d(2, 2), (2, 3, 6, 4), draw="distinct"),
    Case("maxpool_k2_odd", "pooling", lambda nn: nn.MaxPool2d(2), (2, 2, 7, 5), draw="distinct"),
    Case("maxpool_k3s2p1", "pooling", lambda nn: nn.MaxPool2d(3, 2, 1), (2, 2, 7, 5),
         draw="distinct"),
    Case("maxpool_k3s1", "pooling", lambda nn: nn.MaxPool2d(3, 1), (1, 2, 5, 6), draw="distinct"),
    Case("maxpool_k3x2", "pooling", lambda nn: nn.MaxPool2d((3, 2), (1, 2), (1, 0)),
         (2, 2, 5, 6), draw="distinct"),
    Case("avgpool_k2s2", "pooling", lambda nn: nn.AvgPool2d(2, 2), (2, 3, 6, 4)),
    Case("avgpool_k2_odd", "pooling", lambda nn: nn.AvgPool2d(2), (2, 2, 7, 5)),
    Case("avgpool_k3s2p1", "pooling", lambda nn: nn.AvgPool2d(3, 2, 1), (2, 2, 7, 5)),
    Case("avgpool_k3s1", "pooling", lambda nn: nn.AvgPool2d(3, 1), (1, 2, 5, 6)),
    Case("avgpool_k3x2", "pooling", lambda nn: nn.AvgPool2d((3, 2), (1, 2), (1, 1)), (2, 2, 5, 6)),
    Case("global_avgpool", "pooling", lambda nn: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    # batchnorm.py
    Case("bn1d_train", "batchnorm", lambda nn: nn.BatchNorm1d(4), (6, 4), train=True),
    Case("bn1d_ncl_train", "batchnorm", lambda nn: nn.BatchNorm1d(3), (3, 3, 5), train=True),
    Case("bn1d_eval", "batchnorm", lambda nn: nn.BatchNorm1d(4), (5, 4)),
    Case("bn1d_ncl_eval", "batchnorm", lambda nn: nn.BatchNorm1d(3), (2, 3, 4)),
    Case("bn1d_no_affine_train", "batchnorm", lambda nn: nn.BatchNorm1d(4, affine=False), (5, 4),
         train=True),
    Case("bn1d_cumulative_train", "batchnorm", lambda nn: nn.BatchNorm1d(3, momentum=None),
         (4, 3), train=True, num_batches_tracked=2),
    Case("bn2d_train", "batchnorm", lambda nn: nn.BatchNorm2d(3), (4, 3, 3, 2), train=True),
    Case("bn2d_train_batch1", "batchnorm", lambda nn: nn.BatchNorm2d(2, eps=1e-3, momentum=0.3),
         (1, 2, 3, 4), train=True),
    Case("bn2d_eval", "batchnorm", lambda nn: nn.BatchNorm2d(3), (2, 3, 4, 3)),
    Case("bn2d_eval_eps", "batchnorm", lambda nn: nn.BatchNorm2d(2, eps=0.1), (3, 2, 2, 3)),
    # dropout.py (training-mode masks are random: see tests/nn/test_dropout.py)
    Case("dropout_eval", "dropout", lambda nn: nn.Dropout(0.5), (3, 4)),
    Case("dropout_eval_4d", "dropout", lambda nn: nn.Dropout(0.2), (2, 3, 2, 2)),
    # activation.py
    Case("relu", "activation", lambda nn: nn.ReLU(), (4, 5), draw="distinct"),
    Case("relu_4d", "activation", lambda nn: nn.ReLU(), (2, 3, 2, 2), draw="distinct"),
    Case("leaky_relu", "activation", lambda nn: nn.LeakyReLU(), (4, 5), draw="distinct"),
    Case("leaky_relu_0.2", "activation", lambda nn: nn.LeakyReLU(0.2), (3, 2, 4), draw="distinct"),
    Case("prelu_shared", "activation", lambda nn: nn.PReLU(), (4, 5), draw="distinct"),
    Case("prelu_shared_4d", "activation", lambda nn: nn.PReLU(init=0.1), (2, 3, 2, 2),
         draw="distinct"),
    Case("prelu_channels", "activation", lambda nn: nn.PReLU(5), (4, 5), draw="distinct"),
    Case("prelu_channels_4d", "activation", lambda nn: nn.PReLU(3), (2, 3, 2, 3),
         draw="distinct"),
    Case("elu", "activation", lambda nn: nn.ELU(), (4, 5), draw="distinct"),
    Case("elu_alpha", "activation", lambda nn: nn.ELU(alpha=0.7), (3, 2, 4), draw="distinct"),
    Case("sigmoid", "activation", lambda nn: nn.Sigmoid(), (4, 5)),
    Case("tanh", "activation", lambda nn: nn.Tanh(), (4, 5)),
    # flatten.py
    Case("flatten", "flatten", lambda nn: nn.Flatten(), (2, 3, 2, 2)),
    Case("flatten_3d", "flatten", lambda nn: nn.Flatten(), (3, 4, 2)),
    # container.py
    Case("sequential_mlp", "container",
         lambda nn: nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, 3)),
         (4, 6)),
    Case("sequential_cnn_train", "container",
         lambda nn: nn.Sequential(*_conv_bn_relu(nn, 2, 3, 1), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(3 * 2 * 3, 4)),
         (3, 2, 5, 6), train=True),
    Case("sequential_nested_eval", "container",
         lambda nn: nn.Sequential(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)),
                                  nn.ELU(), nn.GlobalAvgPool2d(), nn.Linear(3, 2)),
         (2, 2, 5, 4)),
    Case("residual_identity", "container",
         lambda nn: nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))),
         (3, 4)),
    Case("residual_shortcut_train", "container",
         lambda nn: nn.Residual(
             nn.Sequential(*_conv_bn_relu(nn, 2, 3, 2), nn.Conv2d(3, 3, 3, padding=1)),
             nn.Sequential(nn.Conv2d(2, 3, 1, stride=2, bias=False), nn.BatchNorm2d(3))),
         (2, 2, 5, 4), train=True),
    # loss.py
    Case("cross_entropy", "loss", lambda nn: nn.SoftmaxCrossEntropy(), (5, 4), target="labels"),
    Case("cross_entropy_batch1", "loss", lambda nn: nn.SoftmaxCrossEntropy(), (1, 3),
         target="labels"),
    Case("mse", "loss", lambda nn: nn.MSELoss(), (4, 3), target="values"),
    Case("mse_4d", "loss", lambda nn: nn.MSELoss(), (2, 3, 2, 2), target="values"),
]
CASES_BY_NAME = {case.name: case for case in CASES}


class TorchLayers:
    """torch.nn, plus Maxout, GlobalAvgPool2d, Residual and SoftmaxCrossEntropy (torch lacks
    them) written with dist_nn's parameter names and child names."""

    def __init__(self, torch):
        tnn = torch.nn
        self.torch = torch

        class Maxout(tnn.Linear):
            def __init__(self, in_features, out_features, pieces, bias=True):
                super().__init__(in_features, out_features * pieces, bias=bias)
                self.units, self.pieces = out_features, pieces

            def forward(self, x):
                return super().forward(x).view(len(x), self.units, self.pieces).max(-1).values

        class GlobalAvgPool2d(tnn.Module):
            def forward(self, x):
                return x.mean(dim=(2, 3))

        class Residual(tnn.Module):
            def __init__(self, branch, shortcut=None):
                super().__init__()
                self.branch, self.shortcut = branch, shortcut

            def forward(self, x):
                return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

        self.Maxout, self.GlobalAvgPool2d, self.Residual = Maxout, GlobalAvgPool2d, Residual
        self.SoftmaxCrossEntropy = tnn.CrossEntropyLoss

    def __getattr__(self, name):
        return getattr(self.torch.nn, name)


def build_ours(case, seed=FIXTURE_SEED, dtype="float64", device="cpu"):
    """Our module (or loss) for a case, on `device` in `dtype`, in the case's mode.
    Re-seeds the backend's random streams (initialisation draws from them)."""
    with backend.using(device, dtype):
        backend.seed(seed)
        module = case.build(nn)
    if case.target is None:
        module.train(case.train)
    return module


def _draw_x(case, rng):
    if case.target == "labels":
        return 2.0 * rng.standard_normal(case.shape)
    if case.draw == "distinct":  # distinct magnitudes in [0.1, 2.1), random signs
        n = int(np.prod(case.shape))
        magnitudes = 0.1 + rng.permutation(n) * (2.0 / n)
        return (magnitudes * rng.choice([-1.0, 1.0], n)).reshape(case.shape)
    return rng.normal(0.5, 1.5, case.shape)  # off-centre: BatchNorm's shift matters


def _perturbed_state(module, rng):
    """The module's state dict with random, non-trivial values: init leaves biases at 0 and
    BatchNorm at the identity, which would hide a missing bias or a mix-up of statistics."""
    state = module.state_dict()
    for name, value in state.items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape)
        elif name.endswith("running_mean"):
            state[name] = rng.normal(0.0, 1.0, value.shape)
        elif value.dtype.kind == "f":
            state[name] = value + 0.2 * rng.standard_normal(value.shape)
    return state


def make_inputs(case, seed):
    """x, and dy and param.* (layers) or target (losses), drawn from `seed`. No torch needed:
    our module gives the initial state to perturb and the shape of dy."""
    rng = np.random.default_rng([seed, zlib.crc32(case.name.encode())])
    x = _draw_x(case, rng)
    if case.target == "labels":
        return {"x": x, "target": rng.integers(0, case.shape[1], case.shape[0])}
    if case.target == "values":
        return {"x": x, "target": rng.standard_normal(case.shape)}
    module = build_ours(case, seed)
    state = _perturbed_state(module, rng)
    if case.num_batches_tracked is not None:
        for name in state:
            if name.endswith("num_batches_tracked"):
                state[name] = np.array(case.num_batches_tracked, dtype=np.int64)
    inputs = {"x": x, "dy": rng.standard_normal(module.forward(x.copy()).shape)}
    inputs.update({f"param.{name}": value for name, value in state.items()})
    return inputs


def state_from(inputs):
    """The state dict stored in a case's inputs (the param.* arrays)."""
    return {key[len("param."):]: value for key, value in inputs.items()
            if key.startswith("param.")}


def torch_outputs(torch, case, inputs):
    """PyTorch's y, dx, grad.* and buffer.* for a case's inputs (float64, CPU)."""
    module = case.build(TorchLayers(torch)).double()
    x = torch.tensor(inputs["x"], dtype=torch.float64, requires_grad=True)
    if case.target is not None:
        y = module(x, torch.from_numpy(inputs["target"]))
        y.backward()
        return {"y": y.detach().numpy().copy(), "dx": x.grad.numpy().copy()}
    state = {name: torch.from_numpy(np.array(v)) for name, v in state_from(inputs).items()}
    module.load_state_dict(state, strict=True)
    module.train(case.train)
    y = module(x)
    y.backward(torch.from_numpy(inputs["dy"]))
    outputs = {"y": y.detach().numpy().copy(), "dx": x.grad.numpy().copy()}
    outputs.update({f"grad.{n}": p.grad.numpy().copy() for n, p in module.named_parameters()})
    outputs.update({f"buffer.{n}": b.numpy().copy() for n, b in module.named_buffers()})
    return outputs


def generate(torch):
    cases = {}
    for case in CASES:
        inputs = make_inputs(case, FIXTURE_SEED)
        cases[case.name] = {**inputs, **torch_outputs(torch, case, inputs)}
    return cases

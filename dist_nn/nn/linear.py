"""Fully connected layers: Linear and Maxout."""
from .. import backend
from . import init
from .module import Module, Parameter


def _check_features(layer, x, in_features):
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"{type(layer).__name__} expects input (N, {in_features}), "
                         f"got shape {tuple(x.shape)}")


class Linear(Module):
    """y = x W^T + b.   x: (N, in_features) -> y: (N, out_features).
    weight: (out_features, in_features), bias: (out_features,) as in torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, init_scheme="he"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.weight((out_features, in_features), init_scheme))
        self.bias = Parameter(init.zeros(out_features), weight_decay=False) if bias else None

    def forward(self, x):
        _check_features(self, x, self.in_features)
        self.x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy):
        self.weight.grad += dy.T @ self.x
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        return dy @ self.weight.data if self.input_grad else None

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Maxout(Module):
    """Goodfellow et al.: y_j = max_k (x W^T + b)_{j,k}, k over `pieces` linear units.
    x: (N, in_features) -> y: (N, out_features).
    weight: (out_features * pieces, in_features), row j * pieces + k is piece k of unit j
    (the layout of torch Linear(in, out * pieces) followed by .view(N, out, pieces).max(-1))."""

    def __init__(self, in_features, out_features, pieces, bias=True, init_scheme="xavier"):
        super().__init__()
        if pieces < 1:
            raise ValueError(f"Maxout needs pieces >= 1, got {pieces}")
        self.in_features, self.out_features, self.pieces = in_features, out_features, pieces
        self.weight = Parameter(init.weight((out_features * pieces, in_features), init_scheme))
        self.bias = (Parameter(init.zeros(out_features * pieces), weight_decay=False)
                     if bias else None)

    def forward(self, x):
        _check_features(self, x, self.in_features)
        xp = backend.get_array_module(x)
        self.x = x
        z = x @ self.weight.data.T
        if self.bias is not None:
            z += self.bias.data
        z = z.reshape(len(x), self.out_features, self.pieces)
        # one-hot of the first maximal piece: the gradient goes to exactly one piece
        self.winner = xp.arange(self.pieces) == z.argmax(axis=2)[..., None]
        return z.max(axis=2)

    def backward(self, dy):
        dz = (self.winner * dy[..., None]).reshape(len(dy), -1)
        self.weight.grad += dz.T @ self.x
        if self.bias is not None:
            self.bias.grad += dz.sum(axis=0)
        return dz @ self.weight.data if self.input_grad else None

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"

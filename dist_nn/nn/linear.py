"""Fully connected layers: Linear and Maxout."""
from .. import backend
from . import init as initial
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b.   x: (N, in_features) -> y: (N, out_features).
    weight: (out_features, in_features), bias: (out_features,) as in torch.nn.Linear.
    init: "pytorch" (torch.nn.Linear's default), "he", "xavier", "normal" (nn.init)."""

    def __init__(self, in_features, out_features, bias=True, init="pytorch"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        self.weight = Parameter(initial.weight(shape, init))
        self.bias = Parameter(initial.bias(shape, init), weight_decay=False) if bias else None

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects input (N, {self.in_features}), "
                             f"got shape {tuple(x.shape)}")
        self.keep(x=x)
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy):
        self.weight.grad += dy.T @ self.kept(self.x)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        return dy @ self.weight.data if self.input_grad else None

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Maxout(Linear):
    """Goodfellow et al.: y_j = max_k (x W^T + b)_{j,k}, k over `pieces` linear units.
    x: (N, in_features) -> y: (N, out_features).
    weight: (out_features * pieces, in_features), row j * pieces + k is piece k of unit j
    (the layout of torch Linear(in, out * pieces) followed by .view(N, out, pieces).max(-1))."""

    def __init__(self, in_features, out_features, pieces, bias=True, init="xavier"):
        if pieces < 1:
            raise ValueError(f"Maxout needs pieces >= 1, got {pieces}")
        super().__init__(in_features, out_features * pieces, bias, init)
        self.out_features, self.pieces = out_features, pieces

    def forward(self, x):
        xp = backend.get_array_module(x)
        z = super().forward(x).reshape(len(x), self.out_features, self.pieces)
        # one-hot of the first maximal piece: the gradient goes to exactly one piece
        self.keep(winner=xp.arange(self.pieces) == z.argmax(axis=2)[..., None])
        return z.max(axis=2)

    def backward(self, dy):
        return super().backward((self.kept(self.winner) * dy[..., None]).reshape(len(dy), -1))

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"

"""Flatten: (N, *dims) -> (N, prod(dims)), as torch.nn.Flatten()."""
from .module import Module


class Flatten(Module):
    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy):
        return dy.reshape(self.in_shape)

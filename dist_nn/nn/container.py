"""Containers: Sequential and Residual."""
from .module import Module


class Sequential(Module):
    """Runs its children in order; children are named "0", "1", ... as in torch.nn.Sequential."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(child for _, child in self.named_children())

    def __len__(self):
        return len(self.named_children())

    def __getitem__(self, index):
        return list(self)[index]

    def forward(self, x):
        for layer in self:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for layer in reversed(list(self)):
            dy = layer.backward(dy)
        return dy


class Residual(Module):
    """y = branch(x) + shortcut(x); the shortcut is the identity when None (He et al.).
    Children are named "branch" and "shortcut"."""

    def __init__(self, branch, shortcut=None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x):
        # out of place: the branch may have cached the array it returned
        return self.branch.forward(x) + (x if self.shortcut is None else self.shortcut.forward(x))

    def backward(self, dy):
        return self.branch.backward(dy) + (dy if self.shortcut is None else self.shortcut.backward(dy))

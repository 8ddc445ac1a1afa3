"""Containers: Sequential and Residual."""
from .module import Module


class Sequential(Module):
    """Runs its children in order. Children are named "0", "1", ... as in torch.nn.Sequential,
    or by the keys of a single dict argument (torch's OrderedDict form)."""

    def __init__(self, *layers):
        super().__init__()
        named = layers[0] if len(layers) == 1 and isinstance(layers[0], dict) else (
            {str(i): layer for i, layer in enumerate(layers)})
        for name, layer in named.items():
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential child {name!r} is not a Module: {layer!r}")
            setattr(self, name, layer)

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
            if dy is None:  # the layer skipped its input gradient (see skip_input_grad)
                break
        return dy


def skip_input_grad(model):
    """Let backward skip the gradient with respect to the model's input, as PyTorch does for
    inputs that do not require grad: the first layer with parameters (reached through
    Sequentials, past parameter-free layers) stops computing it. Returns that layer, or None
    when the model does not start that way. model.backward(dy) then returns None."""
    layer = model
    while isinstance(layer, Sequential):
        children = list(layer)
        index = next((i for i, c in enumerate(children) if c.parameters()), None)
        if index is None:
            return None
        layer = children[index]
    if layer.named_children() or not layer.own_parameters():
        return None  # a residual block or other composite: its branches need dx
    layer.input_grad = False
    return layer


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

"""Weights both ways between dist_nn and PyTorch (torch is needed only here, and imported lazily).

Parameter and buffer names and shapes are PyTorch's, so a state dict converts by changing the
array type alone:

    model.load_state_dict(from_torch(torch_model.state_dict()))
    torch_model.load_state_dict(to_torch(model.state_dict()))

`to_torch_module(model)` builds the equivalent torch.nn module of a dist_nn model (same
structure, names and semantics) and loads its weights: an export to PyTorch, and the oracle
the tests compare whole models against.

`python -m dist_nn.torch_interop STATE_DICT.pt OUT.h5` converts a saved PyTorch state dict
into a dist_nn checkpoint (model weights only) for `model.init_from`.
"""
import argparse
import sys
from collections import OrderedDict

from . import nn
from .models.resnet import BasicBlock, PadShortcut


def from_torch(state_dict):
    """A PyTorch state dict -> {name: NumPy array}; drops the "module." prefix that
    DataParallel/DistributedDataParallel add."""
    prefix = "module."
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def to_torch(state):
    """{name: array} (NumPy, or anything with to_host) -> a PyTorch state dict of tensors."""
    import torch
    from . import backend
    return OrderedDict((k, torch.from_numpy(backend.to_host(v).copy())) for k, v in state.items())


def _torch_classes(torch):
    """torch.nn counterparts of the dist_nn modules torch lacks."""
    tnn = torch.nn

    class Maxout(tnn.Module):
        def __init__(self, m):
            super().__init__()
            self.pieces, self.out_features = m.pieces, m.out_features
            self.weight = tnn.Parameter(torch.empty(m.weight.shape))
            self.bias = tnn.Parameter(torch.empty(m.bias.shape)) if m.bias is not None else None

        def forward(self, x):
            z = tnn.functional.linear(x, self.weight, self.bias)
            return z.view(len(x), self.out_features, self.pieces).max(dim=2).values

    class GlobalAvgPool2d(tnn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    class Residual(tnn.Module):
        def __init__(self, branch, shortcut):
            super().__init__()
            self.branch, self.shortcut = branch, shortcut

        def forward(self, x):
            return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

    class PadShortcut(tnn.Module):
        def __init__(self, m):
            super().__init__()
            self.before, self.after = m.before, m.planes - m.in_planes - m.before

        def forward(self, x):
            return tnn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.before, self.after))

    class BasicBlock(tnn.Module):
        def __init__(self, children):
            super().__init__()
            for name, child in children.items():
                setattr(self, name, child)

        def forward(self, x):
            y = self.bn1(self.conv1(x)).relu()
            y = self.bn2(self.conv2(y))
            return (y + (x if self.shortcut is None else self.shortcut(x))).relu()

    return locals()


def to_torch_module(model):
    """The torch.nn equivalent of a dist_nn model, holding a copy of its weights, in the
    same train/eval mode."""
    import torch
    tnn, extra = torch.nn, _torch_classes(torch)

    def convert(m):
        children = OrderedDict((name, convert(child)) for name, child in m.named_children())
        if isinstance(m, nn.Sequential):
            return tnn.Sequential(children)
        if isinstance(m, nn.Residual):
            return extra["Residual"](children["branch"], children.get("shortcut"))
        if isinstance(m, BasicBlock):
            children.setdefault("shortcut", None)
            return extra["BasicBlock"](children)
        if isinstance(m, nn.Maxout):  # before Linear: a Maxout is a Linear
            return extra["Maxout"](m)
        if isinstance(m, nn.Linear):
            return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        if isinstance(m, nn.Conv2d):
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                              m.padding, bias=m.bias is not None)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            cls = tnn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else tnn.BatchNorm2d
            return cls(m.num_features, m.eps, m.momentum, affine=m.weight is not None)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            cls = tnn.MaxPool2d if isinstance(m, nn.MaxPool2d) else tnn.AvgPool2d
            return cls(m.kernel_size, m.stride, m.padding)
        if isinstance(m, PadShortcut):
            return extra["PadShortcut"](m)
        simple = {nn.ReLU: lambda: tnn.ReLU(), nn.Sigmoid: lambda: tnn.Sigmoid(),
                  nn.Tanh: lambda: tnn.Tanh(), nn.Flatten: lambda: tnn.Flatten(),
                  nn.GlobalAvgPool2d: lambda: extra["GlobalAvgPool2d"](),
                  nn.LeakyReLU: lambda: tnn.LeakyReLU(m.negative_slope),
                  nn.ELU: lambda: tnn.ELU(m.alpha), nn.Dropout: lambda: tnn.Dropout(m.p),
                  nn.PReLU: lambda: tnn.PReLU(m.num_parameters)}
        if type(m) in simple:
            return simple[type(m)]()
        raise TypeError(f"no PyTorch counterpart known for {type(m).__name__}")

    dtype = {"float64": torch.float64, "float32": torch.float32}[
        model.parameters()[0].data.dtype.name]
    module = convert(model).to(dtype)
    module.load_state_dict(to_torch(model.state_dict()))
    return module.train(model.training)


def convert(source, out):
    """A PyTorch state dict file -> a checkpoint holding only the model's weights. The file
    is read with torch.load(weights_only=True): tensors only, never code. A dict that wraps
    the weights under "state_dict" or "model" (common in training scripts) is unwrapped."""
    import torch
    from . import checkpoint
    state = torch.load(source, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{source} holds no state dict of tensors")
    return checkpoint.write(out, from_torch(state), meta={"source": f"PyTorch {source}"})


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dist_nn.torch_interop",
                                     description="Convert a PyTorch state dict (.pt) into a "
                                                 "dist_nn checkpoint for model.init_from.")
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {convert(args.source, args.out)}")
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

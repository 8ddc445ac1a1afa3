"""Parameter and Module: the base of every layer.

A Module computes `forward(x) -> y` and, from the gradient of the loss with respect to y,
`backward(dy) -> dx`, adding the gradients of its parameters into their `.grad`. What backward
needs is cached on the instance during forward. Parameters, buffers and child modules are
plain attributes; their names (dotted for children, `0, 1, ...` in a Sequential) follow
PyTorch's so that state dicts move between the two.

Inside `no_grad()` (evaluation, inference) forward keeps nothing for backward: `keep` stores
None instead of the arrays, so activation memory is that of one layer at a time.
"""
import contextlib
import threading

from .. import backend

_state = threading.local()  # a context manager entered in one thread, as torch.no_grad


def grad_enabled():
    """False inside `no_grad()`: forward passes keep nothing for backward."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Forward passes in this block keep nothing that only backward needs (as torch.no_grad);
    a backward after such a forward raises."""
    saved = grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = saved


def channels_last(x):
    """True when x (N, C, ...) lies in channels-last memory, C varying fastest (the output of
    an NHWC convolution); layers that sweep per channel read it in that order."""
    return (x.ndim > 2 and not x.flags.c_contiguous
            and x.transpose(0, *range(2, x.ndim), 1).flags.c_contiguous)


def new_image(xp, shape, dtype, in_channels_last=False, fill=None):
    """An array of `shape` (N, C, ...), uninitialised or filled with `fill`, in channels-last
    memory when `in_channels_last` (so that a layer hands on the layout it was given)."""
    if in_channels_last:
        n, c, *rest = shape
        out = xp.empty((n, *rest, c), dtype=dtype).transpose(0, len(shape) - 1,
                                                              *range(1, len(shape) - 1))
    else:
        out = xp.empty(shape, dtype=dtype)
    if fill is not None:
        out.fill(fill)
    return out


class Parameter:
    """A trainable array and its gradient (same shape, dtype and device).

    `.data` and `.grad` may be views into an optimizer's flat buffers: update them in place.
    `weight_decay` is False for biases and normalisation scales/shifts; `requires_grad=False`
    freezes the parameter (no optimizer update, no gradient sync).
    """

    def __init__(self, data, weight_decay=True, requires_grad=True):
        self.data = data
        self.grad = backend.get_array_module(data).zeros_like(data)
        self.weight_decay = weight_decay
        self.requires_grad = requires_grad
        self.name = ""  # the attribute name in its module; full names via named_parameters()

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Base class. Subclasses define `forward(x)` and `backward(dy)`."""

    buffer_names = ()  # attributes holding non-trainable state saved in state_dict
    input_grad = True  # False: backward may skip d loss / d input and return None

    def __init__(self):
        self.training = True

    def __setattr__(self, key, value):
        if isinstance(value, Parameter):
            value.name = key
        object.__setattr__(self, key, value)

    def __call__(self, x):
        return self.forward(x)

    def keep(self, **arrays):
        """Cache what backward needs, as attributes; inside no_grad() drop them instead (None),
        so that no array stays alive for a backward that will not come."""
        enabled = grad_enabled()
        for name, value in arrays.items():
            object.__setattr__(self, name, value if enabled else None)

    def kept_bytes(self):
        """Bytes of the arrays this module and its descendants keep for backward now (after
        a forward outside no_grad()): a batch's activation memory."""
        total = 0
        for _, module in self.named_modules():
            for value in vars(module).values():
                if not isinstance(value, Parameter) and hasattr(value, "nbytes") and \
                        hasattr(value, "shape"):
                    total += value.nbytes
        return total

    def kept(self, value):
        """`value` (a kept array), or a clear error when forward ran inside no_grad()."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward after a forward inside "
                               "nn.no_grad(): nothing was kept for it")
        return value

    # --- structure ---------------------------------------------------------------------
    def named_children(self):
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def own_parameters(self):
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Parameter)]

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and all descendants, depth first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for name, p in module.own_parameters():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name in module.buffer_names:
                yield (f"{prefix}.{name}" if prefix else name), getattr(module, name)

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    # --- modes -------------------------------------------------------------------------
    def train(self, mode=True):
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    # --- hooks ---------------------------------------------------------------------------
    def add_forward_hook(self, hook):
        """Call hook(module, output) after every forward of this module."""
        self._add_hook("forward", hook)

    def add_backward_hook(self, hook):
        """Call hook(module) after every backward of this module, when the gradients of its
        own parameters are final (gradient sync starts allreduces from here)."""
        self._add_hook("backward", hook)

    def remove_forward_hook(self, hook):
        self._remove_hook("forward", hook)

    def remove_backward_hook(self, hook):
        self._remove_hook("backward", hook)

    def _add_hook(self, kind, hook):
        hooks = self.__dict__.setdefault(f"_{kind}_hooks", [])
        if not hooks:  # shadow the class's method with one that runs the hooks

            def with_hooks(arg):  # the class looked up now: nn.amp swaps it for a while
                result = getattr(type(self), kind)(self, arg)
                for h in list(hooks):
                    h(self, result) if kind == "forward" else h(self)
                return result
            object.__setattr__(self, kind, with_hooks)
        hooks.append(hook)

    def _remove_hook(self, kind, hook):
        hooks = self.__dict__.get(f"_{kind}_hooks", [])
        hooks.remove(hook)
        if not hooks:
            del self.__dict__[kind]

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    # --- state ---------------------------------------------------------------------------
    def state_arrays(self):
        """name -> the live array, parameters and buffers module by module (PyTorch's order)."""
        state = {}
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, p in module.own_parameters():
                state[dot + name] = p.data
            for name in module.buffer_names:
                state[dot + name] = getattr(module, name)
        return state

    def state_dict(self):
        """Flat name -> NumPy copy of every parameter and buffer."""
        return {name: backend.to_host(a).copy() for name, a in self.state_arrays().items()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters and buffers in place (views stay views).

        Raises ValueError naming every missing or unexpected key and every shape mismatch;
        with strict=False, missing and unexpected keys are ignored (shapes must still match).
        """
        targets = self.state_arrays()
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(targets[k].shape)}"
                      for k in targets if k in state and tuple(state[k].shape) != targets[k].shape]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            raise ValueError("state dict does not fit the model: " + " | ".join(problems))
        for name, target in targets.items():
            if name in state:
                xp = backend.get_array_module(target)
                target[...] = xp.asarray(state[name], dtype=target.dtype)

    def __repr__(self):
        lines = [type(self).__name__ + "(" + self.extra_repr()]
        for name, child in self.named_children():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")

    def extra_repr(self):
        return ""

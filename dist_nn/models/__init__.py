"""Model builders by name: build("resnet20", input_shape=(3, 32, 32), num_classes=10).

A builder is any function `builder(input_shape, num_classes, comm=None, **options)` returning
an `nn.Module`. The built-in ones are registered by name in MODELS; a user's builder is named
by its import path, `"package.module:function"`, and imported on every rank (the working
directory is importable, as with `python -m`).
"""
import functools
import importlib
import os
import sys

from .cnn import cnn
from .mlp import mlp
from .resnet import cifar_resnet, resnet18

MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet20": functools.partial(cifar_resnet, 20),
    "resnet32": functools.partial(cifar_resnet, 32),
    "resnet56": functools.partial(cifar_resnet, 56),
    "resnet18": resnet18,
}


class ModelError(ValueError):
    """A builder that cannot be found, fails, or builds a model that does not fit the data."""


def is_import_path(name):
    return ":" in name


def check_chosen_by_user(name, named_now, source, allow):
    """A file does not choose the code that runs: a user's builder (an import path) that
    `source` records is built only if the user names it now (`named_now`, the model.name given
    on this command line or file; `allow`: how else this command allows it)."""
    if is_import_path(name) and named_now != name:
        raise ModelError(f"{source} records the model {name[:200]!r}, which is not built in: "
                         "a checkpoint does not choose the code that runs; name it now "
                         f"(model.name={name[:200]}){allow} to build it")


def builder(name):
    """The builder function a model name stands for: a registered name or an import path."""
    if name in MODELS:
        return MODELS[name]
    if not is_import_path(name):
        raise ModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or name your "
                         "own builder as \"package.module:function\"")
    module_name, _, function_name = name.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` does, also for the console scripts
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the module raises on import
        raise ModelError(f"model {name!r}: cannot import {module_name!r}: "
                         f"{type(error).__name__}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelError(f"model {name!r}: {module_name!r} has no function {function_name!r}")
    return function


def build(name, input_shape, num_classes, **options):
    """The model `name` for inputs of shape (C, H, W) and `num_classes` outputs; options go
    to its builder (e.g. hidden, dropout, comm). A builder that fails is a ModelError, and so
    is a model that does not fit the data (check_fits)."""
    make = builder(name)
    try:
        model = make(tuple(input_shape), num_classes, **options)
    except Exception as error:
        raise ModelError(f"model {name!r} cannot be built for inputs {tuple(input_shape)} and "
                         f"{num_classes} classes: {type(error).__name__}: {error}") from None
    return check_fits(model, input_shape, num_classes, repr(name))


PROBE = 2  # samples of check_fits' forward pass (the model keeps its activations after it)


def check_fits(model, input_shape, num_classes, name="model"):
    """`model`, when it is an nn.Module mapping a batch of inputs of `input_shape` to one
    output per class; else a ModelError saying what does not fit. Probes a batch of 2 in
    eval mode: no statistics change, no collective (SyncBN uses its running statistics)."""
    from .. import backend, nn
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name}: the builder returned {type(model).__name__}, not a "
                         "dist_nn nn.Module")
    probe = backend.xp.zeros((PROBE, *input_shape), dtype=backend.float_dtype)
    model.eval()
    try:
        shape = tuple(model.forward(probe).shape)
    except Exception as error:
        raise ModelError(f"model {name} does not fit inputs of shape {tuple(input_shape)}: "
                         f"its forward pass fails with {type(error).__name__}: {error}") from None
    finally:
        model.train()
    if shape != (2, num_classes):
        raise ModelError(f"model {name} maps a batch of 2 inputs of shape "
                         f"{tuple(input_shape)} to outputs of shape {shape}; the data needs "
                         f"(2, {num_classes}): one output per class")
    return model


def from_config(model_config, input_shape, num_classes, comm=None):
    """The model a run's [model] config section describes (dist_nn.config.Model): the
    built-in models take their keys from the section, every builder `model.options`."""
    c = model_config
    bn_comm = comm if c.sync_bn else None
    options = {
        "mlp": dict(hidden=tuple(c.hidden), activation=c.activation, dropout=c.dropout,
                    batch_norm=c.batch_norm, maxout_pieces=c.maxout_pieces),
        "cnn": dict(channels=tuple(c.channels), hidden=c.fc, dropout=c.dropout),
    }.get(c.name, {})
    return build(c.name, input_shape, num_classes, comm=bn_comm, **{**options, **c.options})

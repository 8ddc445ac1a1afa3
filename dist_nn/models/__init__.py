"""Model builders by name: build("resnet20", input_shape=(3, 32, 32), num_classes=10)."""
import functools

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


def build(name, input_shape, num_classes, **options):
    """The model `name` for inputs of shape (C, H, W) and `num_classes` outputs; options go
    to its builder (e.g. hidden, dropout, comm)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](tuple(input_shape), num_classes, **options)


def from_config(model_config, input_shape, num_classes, comm=None):
    """The model a run's [model] config section describes (dist_nn.config.Model)."""
    c = model_config
    bn_comm = comm if c.sync_bn else None
    options = {
        "mlp": dict(hidden=tuple(c.hidden), activation=c.activation, dropout=c.dropout,
                    batch_norm=c.batch_norm, maxout_pieces=c.maxout_pieces, comm=bn_comm),
        "cnn": dict(channels=tuple(c.channels), hidden=c.fc, dropout=c.dropout, comm=bn_comm),
    }.get(c.name, dict(comm=bn_comm))
    return build(c.name, input_shape, num_classes, **options)

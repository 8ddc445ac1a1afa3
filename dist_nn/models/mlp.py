"""Multi-layer perceptron."""
import math

from .. import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU, "elu": nn.ELU,
               "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
SATURATING = ("sigmoid", "tanh")  # initialised with Xavier; the ReLU family with He (zero biases)


def mlp(input_shape, num_classes, hidden=(512, 512), activation="relu", dropout=0.0,
        batch_norm=False, maxout_pieces=0, comm=None):
    """Flatten -> [Linear -> (BatchNorm1d) -> activation -> Dropout] per hidden width -> Linear.

    With maxout_pieces > 0 each hidden Linear + activation is a Maxout layer instead.
    Dropout layers are present even at p = 0 so that parameter names do not depend on it.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    scheme = "xavier" if activation in SATURATING else "he"
    layers = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        if maxout_pieces:
            layers.append(nn.Maxout(width, size, maxout_pieces))
        else:
            layers.append(nn.Linear(width, size, bias=not batch_norm, init=scheme))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size, comm=comm))
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes, init=scheme))
    return nn.Sequential(*layers)

"""The layer core: modules with explicit forward and backward, on NumPy or CuPy."""
from . import amp, init, kernels
from .activation import ELU, LeakyReLU, PReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d, fuse_relu
from .container import Residual, Sequential, skip_input_grad
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear, Maxout
from .loss import MSELoss, SoftmaxCrossEntropy
from .module import Module, Parameter, channels_last, grad_enabled, new_image, no_grad
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d

__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "ELU", "Flatten",
    "GlobalAvgPool2d", "LeakyReLU", "Linear", "MSELoss", "MaxPool2d", "Maxout", "Module",
    "PReLU", "Parameter", "ReLU", "Residual", "Sequential", "Sigmoid", "SoftmaxCrossEntropy",
    "Tanh", "amp", "channels_last", "fuse_relu", "grad_enabled", "init", "kernels", "new_image",
    "no_grad", "skip_input_grad",
]

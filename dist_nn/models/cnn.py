"""Convolutional network: conv-bn-relu-pool stages, then a fully connected classifier."""
from .. import nn


def cnn(input_shape, num_classes, channels=(32, 64), hidden=256, dropout=0.5, batch_norm=True,
        comm=None):
    """[Conv3x3 (pad 1) -> BatchNorm2d -> ReLU -> MaxPool 2x2] per entry of `channels`, then
    Flatten -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes).

    For a 3x32x32 input and the defaults this is the CIFAR-shaped benchmark CNN
    conv32-bn-relu-pool-conv64-bn-relu-pool-fc256-dropout-fc10. Weights: He, biases zero.
    """
    in_channels, height, width = input_shape
    layers = []
    for out_channels in channels:
        layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm,
                                init="he"))
        layers.append(nn.ReLU())
        if batch_norm:
            layers.insert(-1, nn.BatchNorm2d(out_channels, comm=comm))
            nn.fuse_relu(*layers[-2:])
        layers.append(nn.MaxPool2d(2))
        in_channels, height, width = out_channels, height // 2, width // 2
        if min(height, width) < 1:
            raise ValueError(f"cnn: input {input_shape} is too small for {len(channels)} "
                             "2x2 poolings")
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, hidden, init="he"),
               nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes, init="he")]
    return nn.Sequential(*layers)

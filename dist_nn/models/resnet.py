"""Residual networks for 32x32 images.

resnet20/32/56 are He et al.'s CIFAR networks (2016, section 4.2): a 3x3 conv with 16
filters, three stages of n basic blocks with 16, 32 and 64 filters (n = 3, 5, 9), global
average pooling and a linear classifier; where a stage halves the resolution, the shortcut
subsamples and pads the new channels with zeros (option A, no parameters). resnet18 is the
CIFAR variant of the ImageNet network: 64-512 filters in four stages of two blocks, with
1x1 convolution + BatchNorm projection shortcuts (option B).

Parameter names follow the common PyTorch CIFAR implementations (conv1, bn1, layer1.0.conv1,
..., linear) so that their state dicts load. Weights are initialised with He (fan_in), as
these networks were trained; biases (the classifier's) with zeros.
"""
from .. import backend, nn


class PadShortcut(nn.Module):
    """Option-A shortcut: x[:, :, ::2, ::2] with (planes - in_planes) zero channels split
    evenly before and after. x: (N, C, H, W) -> (N, planes, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_planes, planes):
        super().__init__()
        self.in_planes, self.planes = in_planes, planes
        self.before = (planes - in_planes) // 2

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.in_shape, self.in_channels_last = x.shape, nn.channels_last(x)
        sub = x[:, :, ::2, ::2]
        y = nn.new_image(xp, (len(x), self.planes) + sub.shape[2:], x.dtype,
                         self.in_channels_last, fill=0)
        y[:, self.before:self.before + self.in_planes] = sub
        return y

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        dx = nn.new_image(xp, self.in_shape, dy.dtype, self.in_channels_last, fill=0)
        dx[:, :, ::2, ::2] = dy[:, self.before:self.before + self.in_planes]
        return dx


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convolutions; conv1 carries
    the stride. The shortcut is the identity when shapes agree, else `shortcut_kind`:
    "pad" (option A) or "projection" (1x1 conv + BatchNorm, option B)."""

    def __init__(self, in_planes, planes, stride=1, shortcut_kind="pad", comm=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False,
                               init="he")
        self.bn1 = nn.BatchNorm2d(planes, comm=comm)
        self.relu1 = nn.ReLU()
        nn.fuse_relu(self.bn1, self.relu1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False, init="he")
        self.bn2 = nn.BatchNorm2d(planes, comm=comm)
        self.relu2 = nn.ReLU()
        if stride == 1 and in_planes == planes:
            self.shortcut = None
        elif shortcut_kind == "pad":
            if stride != 2:
                raise ValueError("the zero-padding shortcut subsamples by exactly 2")
            self.shortcut = PadShortcut(in_planes, planes)
        elif shortcut_kind == "projection":
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False,
                                                    init="he"),
                                          nn.BatchNorm2d(planes, comm=comm))
        else:
            raise ValueError(f"unknown shortcut {shortcut_kind!r}; choose 'pad' or 'projection'")
        self.branch = [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2]

    def forward(self, x):
        y = x
        for layer in self.branch:
            y = layer.forward(y)
        y += x if self.shortcut is None else self.shortcut.forward(x)  # bn2 keeps no ref to y
        return self.relu2.forward(y)

    def backward(self, dy):
        dy = self.relu2.backward(dy)
        dx = dy if self.shortcut is None else self.shortcut.backward(dy)
        for layer in reversed(self.branch):
            dy = layer.backward(dy)
        return dx + dy


def _resnet(input_shape, num_classes, widths, blocks, shortcut_kind, comm):
    in_channels = input_shape[0]
    layers = {"conv1": nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False, init="he"),
              "bn1": nn.BatchNorm2d(widths[0], comm=comm),
              "relu": nn.ReLU()}
    nn.fuse_relu(layers["bn1"], layers["relu"])
    in_planes = widths[0]
    for stage, planes in enumerate(widths):
        stride = 1 if stage == 0 else 2
        stage_blocks = []
        for b in range(blocks):
            stage_blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1,
                                           shortcut_kind, comm))
            in_planes = planes
        layers[f"layer{stage + 1}"] = nn.Sequential(*stage_blocks)
    layers["pool"] = nn.GlobalAvgPool2d()
    layers["linear"] = nn.Linear(in_planes, num_classes, init="he")
    return nn.Sequential(layers)


def cifar_resnet(depth, input_shape, num_classes, comm=None):
    """He et al.'s CIFAR ResNet of depth 6n + 2 (20, 32, 44, 56, 110, ...)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    return _resnet(input_shape, num_classes, (16, 32, 64), (depth - 2) // 6, "pad", comm)


def resnet18(input_shape, num_classes, comm=None):
    return _resnet(input_shape, num_classes, (64, 128, 256, 512), 2, "projection", comm)

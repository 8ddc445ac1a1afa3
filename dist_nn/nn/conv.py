"""2-D convolution (cross-correlation, as torch.nn.Conv2d) by im2col and one batched GEMM."""
from .. import backend
from . import init
from .module import Module, Parameter
from .windows import add_window_grads, check_image, out_size, pad, pair, unpad, window_view


class Conv2d(Module):
    """x: (N, C_in, H, W) -> y: (N, C_out, Ho, Wo), Ho = (H + 2 p - kh) // s + 1.
    weight: (C_out, C_in, kh, kw), bias: (C_out,); zero padding."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init_scheme="he"):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = pair(kernel_size), pair(stride), pair(padding)
        self.weight = Parameter(init.weight((out_channels, in_channels, *self.kernel_size),
                                            init_scheme))
        self.bias = Parameter(init.zeros(out_channels), weight_decay=False) if bias else None

    def forward(self, x):
        check_image(self, x, self.in_channels)
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        if min(out_hw) < 1:
            raise ValueError(f"Conv2d input {h}x{w} is smaller than its kernel {kh}x{kw} "
                             f"(padding {ph},{pw})")
        x_padded = pad(x, self.padding)
        # im2col: (N, C*kh*kw, Ho*Wo), row order (c, i, j) matches weight.reshape(C_out, -1)
        self.cols = window_view(x_padded, self.kernel_size, self.stride, out_hw).reshape(
            n, -1, out_hw[0] * out_hw[1])
        self.x_padded_shape, self.out_hw = x_padded.shape, out_hw
        y = self.weight.data.reshape(self.out_channels, -1) @ self.cols  # (N, C_out, Ho*Wo)
        if self.bias is not None:
            y += self.bias.data[:, None]
        return y.reshape(n, self.out_channels, *out_hw)

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        n = len(dy)
        dy = dy.reshape(n, self.out_channels, -1)
        w2 = self.weight.data.reshape(self.out_channels, -1)
        self.weight.grad += (dy @ self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(
            self.weight.shape)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2))
        dcols = (w2.T @ dy).reshape(n, self.in_channels, *self.kernel_size, *self.out_hw)
        dx_padded = xp.zeros(self.x_padded_shape, dtype=dy.dtype)
        add_window_grads(dx_padded, dcols, self.stride)
        return xp.ascontiguousarray(unpad(dx_padded, self.padding))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")

"""2-D convolution (cross-correlation, as torch.nn.Conv2d) by im2col and batched GEMMs.

Forward: y[n] = W (C_out, C_in*kh*kw) @ cols[n] (C_in*kh*kw, Ho*Wo), already in NCHW order.
Backward: dW = sum_n dy[n] @ cols[n]^T. For stride 1 (and padding < kernel) the input
gradient is itself a convolution (of dy, padded by k - 1 - p, with the flipped, in/out-swapped
kernel), which reuses im2col and one GEMM; otherwise the column gradients are scattered back
(col2im), which is slower: many small strided additions.
"""
from .. import backend
from . import init
from .module import Module, Parameter
from .windows import add_window_grads, check_image, out_size, pad, pair, unpad, window_view


def im2col(x, kernel, stride, padding):
    """(N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo) with rows in (c, i, j) order, and (Ho, Wo)."""
    n, _, h, w = x.shape
    out_hw = (out_size(h, kernel[0], stride[0], padding[0]),
              out_size(w, kernel[1], stride[1], padding[1]))
    windows = window_view(pad(x, padding), kernel, stride, out_hw)
    return windows.reshape(n, -1, out_hw[0] * out_hw[1]), out_hw


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
        h, w = x.shape[2:]
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d input {h}x{w} is smaller than its kernel {kh}x{kw} "
                             f"(padding {ph},{pw})")
        self.cols, out_hw = im2col(x, self.kernel_size, self.stride, self.padding)
        self.in_shape = x.shape
        y = self.weight.data.reshape(self.out_channels, -1) @ self.cols  # (N, C_out, Ho*Wo)
        if self.bias is not None:
            y += self.bias.data[:, None]
        return y.reshape(len(x), self.out_channels, *out_hw)

    def backward(self, dy):
        n = len(dy)
        dy3 = dy.reshape(n, self.out_channels, -1)
        self.weight.grad += (dy3 @ self.cols.transpose(0, 2, 1)).sum(axis=0).reshape(
            self.weight.shape)
        if self.bias is not None:
            self.bias.grad += dy3.sum(axis=(0, 2))
        if not self.input_grad:
            return None
        if self.stride == (1, 1) and all(p < k for p, k in zip(self.padding, self.kernel_size)):
            return self._input_grad_by_convolution(dy)
        return self._input_grad_by_col2im(dy3)

    def _input_grad_by_convolution(self, dy):
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        # rows (o, i, j) of the flipped kernel, as im2col orders dy's columns
        flipped = self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(
            self.in_channels, -1)
        dy_cols, _ = im2col(dy, self.kernel_size, (1, 1), (kh - 1 - ph, kw - 1 - pw))
        return (flipped @ dy_cols).reshape(self.in_shape)

    def _input_grad_by_col2im(self, dy3):
        xp = backend.get_array_module(dy3)
        n, _, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        dcols = (self.weight.data.reshape(self.out_channels, -1).T @ dy3).reshape(
            n, self.in_channels, kh, kw, *out_hw)
        dx_padded = xp.zeros((n, self.in_channels, h + 2 * ph, w + 2 * pw), dtype=dy3.dtype)
        add_window_grads(dx_padded, dcols, self.stride)
        return xp.ascontiguousarray(unpad(dx_padded, self.padding))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")

"""2-D convolution (cross-correlation, as torch.nn.Conv2d) by im2col and GEMMs.

Memory: forward keeps only its input (a reference, usually the array the previous layer keeps
anyway); backward rebuilds the columns for the weight gradient, one layer at a time, instead of
every layer holding kh*kw copies of its input from forward to backward.

Layout, per layer (inputs, outputs and weights stay NCHW / PyTorch's either way):
- "nchw": columns (N, C*kh*kw, Ho*Wo), one GEMM per sample, the output is NCHW already. Best
  for few channels (16), where the per-sample GEMMs are wide (Ho*Wo) and NHWC's transposes
  cost more than they save.
- "nhwc": columns (N*Ho*Wo, kh*kw*C), one GEMM for the whole batch; its (N*Ho*Wo, C_out)
  result is transposed back. Faster from 32 channels on (measured: bench/core_vs_torch.py).
Input gradient: for stride 1 (and padding < kernel) it is itself a convolution (of dy, padded
by k - 1 - p, with the flipped, in/out-swapped kernel), one more im2col and GEMM; otherwise the
column gradients are scattered back (col2im), kh*kw strided additions.
"""
from .. import backend
from . import init
from .module import Module, Parameter
from .windows import add_window_grads, check_image, out_size, pad, pair, unpad, window_view

NHWC_FROM_CHANNELS = 32  # "auto" layout: NHWC when in_channels reach this


def im2col(x, kernel, stride, padding):
    """(N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo) with rows in (c, i, j) order, and (Ho, Wo)."""
    n, _, h, w = x.shape
    out_hw = (out_size(h, kernel[0], stride[0], padding[0]),
              out_size(w, kernel[1], stride[1], padding[1]))
    windows = window_view(pad(x, padding), kernel, stride, out_hw)
    return windows.reshape(n, -1, out_hw[0] * out_hw[1]), out_hw


def im2col_nhwc(x, kernel, stride, padding):
    """(N, C, H, W) -> cols (N*Ho*Wo, kh*kw*C) with columns in (i, j, c) order, and (Ho, Wo)."""
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_hw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    padded = xp.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = x.transpose(0, 2, 3, 1)
    s_n, s_h, s_w, s_c = padded.strides
    windows = xp.lib.stride_tricks.as_strided(
        padded, shape=(n, *out_hw, kh, kw, c),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))
    return windows.reshape(n * out_hw[0] * out_hw[1], kh * kw * c), out_hw


class Conv2d(Module):
    """x: (N, C_in, H, W) -> y: (N, C_out, Ho, Wo), Ho = (H + 2 p - kh) // s + 1.
    weight: (C_out, C_in, kh, kw), bias: (C_out,); zero padding.
    layout: "auto" (NHWC from NHWC_FROM_CHANNELS input channels on), "nchw" or "nhwc"."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init_scheme="he", layout="auto"):
        super().__init__()
        if layout not in ("auto", "nchw", "nhwc"):
            raise ValueError(f"Conv2d layout must be 'auto', 'nchw' or 'nhwc', got {layout!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = pair(kernel_size), pair(stride), pair(padding)
        self.nhwc = layout == "nhwc" or (layout == "auto" and in_channels >= NHWC_FROM_CHANNELS)
        self.weight = Parameter(init.weight((out_channels, in_channels, *self.kernel_size),
                                            init_scheme))
        self.bias = Parameter(init.zeros(out_channels), weight_decay=False) if bias else None

    def _matrix(self):
        """The weight as the GEMM operand: (C_out, C_in*kh*kw) for NCHW, (kh*kw*C_in, C_out)
        for NHWC columns."""
        w = self.weight.data
        return w.transpose(2, 3, 1, 0).reshape(-1, self.out_channels) if self.nhwc else \
            w.reshape(self.out_channels, -1)

    def forward(self, x):
        xp = backend.get_array_module(x)
        check_image(self, x, self.in_channels)
        h, w = x.shape[2:]
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d input {h}x{w} is smaller than its kernel {kh}x{kw} "
                             f"(padding {ph},{pw})")
        self.keep(x=x)
        n = len(x)
        if self.nhwc:
            cols, out_hw = im2col_nhwc(x, self.kernel_size, self.stride, self.padding)
            y2 = cols @ self._matrix()  # (N*Ho*Wo, C_out)
            if self.bias is not None:
                y2 += self.bias.data
            return xp.ascontiguousarray(
                y2.reshape(n, *out_hw, self.out_channels).transpose(0, 3, 1, 2))
        cols, out_hw = im2col(x, self.kernel_size, self.stride, self.padding)
        y = self._matrix() @ cols  # (N, C_out, Ho*Wo)
        if self.bias is not None:
            y += self.bias.data[:, None]
        return y.reshape(n, self.out_channels, *out_hw)

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        x = self.kept(self.x)
        n = len(dy)
        if self.nhwc:
            cols, _ = im2col_nhwc(x, self.kernel_size, self.stride, self.padding)
            dy2 = xp.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, self.out_channels)
            self.weight.grad += (cols.T @ dy2).reshape(
                *self.kernel_size, self.in_channels, self.out_channels).transpose(3, 2, 0, 1)
            if self.bias is not None:
                self.bias.grad += dy2.sum(axis=0)
        else:
            cols, _ = im2col(x, self.kernel_size, self.stride, self.padding)
            dy3 = dy.reshape(n, self.out_channels, -1)
            self.weight.grad += (dy3 @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(
                self.weight.shape)
            if self.bias is not None:
                self.bias.grad += dy3.sum(axis=(0, 2))
        del cols
        if not self.input_grad:
            return None
        if self.stride == (1, 1) and all(p < k for p, k in zip(self.padding, self.kernel_size)):
            return self._input_grad_by_convolution(dy)
        return self._input_grad_by_col2im(dy)

    def _input_grad_by_convolution(self, dy):
        """dx = dy convolved with the flipped kernel, its in/out channels swapped."""
        xp = backend.get_array_module(dy)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        flipped = self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C_in, C_out, ...)
        full = (kh - 1 - ph, kw - 1 - pw)
        if self.nhwc:
            dy_cols, _ = im2col_nhwc(dy, self.kernel_size, (1, 1), full)
            dx2 = dy_cols @ flipped.transpose(2, 3, 1, 0).reshape(-1, self.in_channels)
            n, _, h, w = self.x.shape
            return xp.ascontiguousarray(dx2.reshape(n, h, w, -1).transpose(0, 3, 1, 2))
        dy_cols, _ = im2col(dy, self.kernel_size, (1, 1), full)
        return (flipped.reshape(self.in_channels, -1) @ dy_cols).reshape(self.x.shape)

    def _input_grad_by_col2im(self, dy):
        xp = backend.get_array_module(dy)
        n, _, h, w = self.x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        dy3 = dy.reshape(n, self.out_channels, -1)
        dcols = (self.weight.data.reshape(self.out_channels, -1).T @ dy3).reshape(
            n, self.in_channels, kh, kw, *out_hw)
        dx_padded = xp.zeros((n, self.in_channels, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
        add_window_grads(dx_padded, dcols, self.stride)
        return xp.ascontiguousarray(unpad(dx_padded, self.padding))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")

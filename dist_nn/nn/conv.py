"""2-D convolution (cross-correlation, as torch.nn.Conv2d) by im2col and GEMMs.

Memory: forward keeps only its input (a reference, usually the array the previous layer keeps
anyway); backward rebuilds the columns for the weight gradient, one layer at a time, instead of
every layer holding kh*kw copies of its input from forward to backward.

Layout, per layer (inputs, outputs and weights stay NCHW / PyTorch's either way):
- "nchw": columns (N, C*kh*kw, Ho*Wo), one GEMM per sample, the output is NCHW already. Best
  for an image's few channels (3), whose NHWC columns would be copied 3 values at a time.
- "nhwc": columns (N*Ho*Wo, kh*kw*C), one GEMM for the slice. Faster from 16 channels on
  (bench/core_vs_torch.py). Its output (and input gradient) is the GEMM's (N*Ho*Wo, C_out)
  result as it is: an (N, C, H, W) array in channels-last memory, as PyTorch's channels_last
  format. Transposing it back would cost a pass each way, and the next NHWC convolution's
  columns are then copied from contiguous pixels (16-channel layers: 36 -> 27 ms a step).
Columns are built for a slice of the batch at a time, so their memory does not grow with the
batch. On the CPU a slice's columns (COLUMN_BYTES) stay in cache from the copy that builds them
to the GEMM that reads them: on resnet20's layers that made convolution ~1.35x faster than
16 MiB slices. On a GPU slices are DEVICE_COLUMN_BYTES: few, big GEMMs.
Input gradient: for stride 1 (and padding < kernel) it is itself a convolution (of dy, padded
by k - 1 - p, with the flipped, in/out-swapped kernel), one more im2col and GEMM; otherwise the
column gradients are scattered back (col2im), kh*kw strided additions.
"""
from .. import backend
from . import init as initial
from .module import Module, Parameter, new_image
from .windows import add_window_grads, check_image, out_size, pad, pair, unpad, window_view

NHWC_FROM_CHANNELS = 16  # "auto" layout: NHWC when in_channels reach this
COLUMN_BYTES = 2 * 2**20  # host: as many samples at a time as their columns fit in (cache)
DEVICE_COLUMN_BYTES = 256 * 2**20  # GPU: the same bound, for memory only


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
    init: "pytorch" (torch.nn.Conv2d's default), "he", "xavier", "normal" (nn.init).
    layout: "auto" (NHWC from NHWC_FROM_CHANNELS input channels on), "nchw" or "nhwc"."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="pytorch", layout="auto"):
        super().__init__()
        if layout not in ("auto", "nchw", "nhwc"):
            raise ValueError(f"Conv2d layout must be 'auto', 'nchw' or 'nhwc', got {layout!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = pair(kernel_size), pair(stride), pair(padding)
        self.nhwc = layout == "nhwc" or (layout == "auto" and in_channels >= NHWC_FROM_CHANNELS)
        shape = (out_channels, in_channels, *self.kernel_size)
        self.weight = Parameter(initial.weight(shape, init))
        self.bias = Parameter(initial.bias(shape, init), weight_decay=False) if bias else None

    def _matrix(self):
        """The weight as the GEMM operand: (C_out, C_in*kh*kw) for NCHW, (kh*kw*C_in, C_out)
        for NHWC columns."""
        w = self.weight.data
        return w.transpose(2, 3, 1, 0).reshape(-1, self.out_channels) if self.nhwc else \
            w.reshape(self.out_channels, -1)

    def _chunks(self, x_shape, kernel, channels):
        """Slices of the batch whose columns (kh*kw*channels per output position) stay within
        the budget of the device: bounded memory whatever the batch size."""
        n, _, h, w = x_shape
        per_sample = kernel[0] * kernel[1] * channels * h * w * self.weight.data.itemsize
        budget = DEVICE_COLUMN_BYTES if backend.on_gpu(self.weight.data) else COLUMN_BYTES
        step = max(1, budget // per_sample)
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def forward(self, x):
        xp = backend.get_array_module(x)
        check_image(self, x, self.in_channels)
        n, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"Conv2d input {h}x{w} is smaller than its kernel {kh}x{kw} "
                             f"(padding {ph},{pw})")
        self.keep(x=x)
        rows, y = self._output(n, self.out_channels, (out_size(h, kh, sh, ph),
                                                      out_size(w, kw, sw, pw)), x.dtype, xp)
        for part in self._chunks(y.shape, self.kernel_size, self.in_channels):
            self._convolve(x[part], self._matrix(), self.stride, self.padding, rows[part])
        if self.bias is not None:
            y += self.bias.data[:, None, None]
        return y

    def _output(self, n, channels, hw, dtype, xp):
        """(buffer, y): the GEMMs write the buffer; y is its (N, C, H, W) view. NHWC layers
        hand on channels-last memory (no transpose back): BatchNorm, ReLU, additions and the
        next NHWC convolution read it as it is."""
        y = new_image(xp, (n, channels, *hw), dtype, in_channels_last=self.nhwc)
        return (y.transpose(0, 2, 3, 1) if self.nhwc else y), y

    def _convolve(self, x, matrix, stride, padding, out):
        """out = x convolved with a kernel of this layer's size, as the GEMM operand `matrix`;
        `out` is a slice of the buffer of `_output`."""
        xp = backend.get_array_module(x)
        if self.nhwc:
            cols, _ = im2col_nhwc(x, self.kernel_size, stride, padding)
            xp.matmul(cols, matrix, out=out.reshape(len(cols), -1))
        else:
            cols, _ = im2col(x, self.kernel_size, stride, padding)
            xp.matmul(matrix, cols, out=out.reshape(len(x), len(matrix), -1))

    def backward(self, dy):
        x = self.kept(self.x)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        grad = None  # summed over slices in the gradient's dtype (a GPU's fit in one)
        for part in self._chunks(dy.shape, self.kernel_size, self.in_channels):
            if self.nhwc:
                cols, _ = im2col_nhwc(x[part], self.kernel_size, self.stride, self.padding)
                dy2 = dy[part].transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
                part_grad = cols.T @ dy2
            else:
                cols, _ = im2col(x[part], self.kernel_size, self.stride, self.padding)
                dy3 = dy[part].reshape(len(cols), self.out_channels, -1)
                part_grad = (dy3 @ cols.transpose(0, 2, 1)).sum(axis=0)
            if grad is None:
                grad = part_grad.astype(self.weight.grad.dtype, copy=False)
            else:
                grad += part_grad
        self.weight.grad += (grad.reshape(*self.kernel_size, self.in_channels, -1).transpose(
            3, 2, 0, 1) if self.nhwc else grad.reshape(self.weight.shape))
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
        matrix = flipped.transpose(2, 3, 1, 0).reshape(-1, self.in_channels) if self.nhwc else \
            flipped.reshape(self.in_channels, -1)
        n, _, h, w = self.x.shape
        rows, dx = self._output(n, self.in_channels, (h, w), dy.dtype, xp)
        for part in self._chunks(dx.shape, self.kernel_size, self.out_channels):
            self._convolve(dy[part], matrix, (1, 1), (kh - 1 - ph, kw - 1 - pw), rows[part])
        return dx

    def _input_grad_by_col2im(self, dy):
        xp = backend.get_array_module(dy)
        n, c, h, w = self.x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        ho, wo = dy.shape[2:]
        dx_padded = new_image(xp, (n, c, h + 2 * ph, w + 2 * pw), dy.dtype, self.nhwc, fill=0)
        matrix = self._matrix()
        for part in self._chunks(dy.shape, self.kernel_size, self.in_channels):
            m = len(dx_padded[part])
            if self.nhwc:
                dy2 = dy[part].transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
                dcols = (dy2 @ matrix.T).reshape(m, ho, wo, kh, kw, c).transpose(0, 5, 3, 4, 1, 2)
            else:
                dy3 = dy[part].reshape(m, self.out_channels, -1)
                dcols = (matrix.T @ dy3).reshape(m, c, kh, kw, ho, wo)
            add_window_grads(dx_padded[part], dcols, self.stride)
        if (ph, pw) == (0, 0):
            return dx_padded
        dx = new_image(xp, self.x.shape, dy.dtype, self.nhwc)
        dx[...] = unpad(dx_padded, self.padding)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")

"""Pooling: MaxPool2d, AvgPool2d (as torch.nn's, count_include_pad=True), GlobalAvgPool2d.

Max and average pooling loop over the kh*kw kernel offsets, each a strided view of the
padded input, so memory stays at the size of the output and any stride/padding works.
MaxPool2d's backward takes 2-3 passes per offset that way; with the `fast` extra (kernels.py)
it is one compiled pass. (A compiled forward was measured slower than NumPy's passes: its
data-dependent branches cost more than the passes do.)
"""
from .. import backend
from . import kernels
from .module import Module, channels_last, grad_enabled, new_image
from .windows import check_image, offset_slice, out_size, pad, pair, unpad


class _Pool2d(Module):
    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride if stride is not None else kernel_size)
        self.padding = pair(padding)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__}: padding {self.padding} must be at most "
                             f"half the kernel size {self.kernel_size}")

    def _pad(self, x):
        """x padded; sets self.offsets, the index of each kernel offset (i, j) into it."""
        check_image(self, x)
        _, _, h, w = x.shape
        self.in_hw = h, w
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        self.out_hw = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        if min(self.out_hw) < 1:
            raise ValueError(f"{type(self).__name__} input {h}x{w} is smaller than its kernel")
        x_padded = pad(x, self.padding, self.pad_value)
        self.padded_shape, self.in_channels_last = x_padded.shape, channels_last(x_padded)
        self.offsets = [offset_slice(i, j, self.stride, self.out_hw)
                        for i in range(kh) for j in range(kw)]
        return x_padded

    def _new(self, xp, shape, dtype, fill=None):
        """A new array in the memory order of this layer's input (channels-last or not)."""
        return new_image(xp, shape, dtype, self.in_channels_last, fill)

    def _dx(self, dx_padded):
        if self.padding == (0, 0):
            return dx_padded
        xp = backend.get_array_module(dx_padded)
        dx = self._new(xp, dx_padded.shape[:2] + self.in_hw, dx_padded.dtype)
        dx[...] = unpad(dx_padded, self.padding)
        return dx

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), max over each window (padding counts as -inf).
    The gradient goes to the first maximal element of each window, as in PyTorch: forward
    records which kernel offset that is (uint8), backward routes dy there."""

    pad_value = float("-inf")

    def forward(self, x):
        xp = backend.get_array_module(x)
        x_padded = self._pad(x)
        y = x_padded[self.offsets[0]].copy(order="K")
        if not grad_enabled():  # the winners only serve backward
            self.winner = None
            for index in self.offsets[1:]:
                xp.maximum(y, x_padded[index], out=y)
            return y
        self.winner = self._new(xp, y.shape, xp.uint8, fill=0)
        for t, index in enumerate(self.offsets[1:], start=1):
            tap = x_padded[index]
            # offsets come in increasing t: a strictly larger value takes over the window
            better = (tap > y).view(xp.uint8)
            better *= t
            xp.maximum(self.winner, better, out=self.winner)
            xp.maximum(y, tap, out=y)
        return y

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        winner = self.kept(self.winner)
        dx_padded = self._new(xp, self.padded_shape, dy.dtype, fill=0)
        if kernels.usable(dy, dx_padded):
            _max_pool_backward_kernel(dy, winner, self.kernel_size[1], *self.stride, dx_padded)
            return self._dx(dx_padded)
        overlapping = any(s < k for s, k in zip(self.stride, self.kernel_size))
        for t, index in enumerate(self.offsets):
            share = dy * (winner == t)
            if overlapping:
                dx_padded[index] += share
            else:
                dx_padded[index] = share
        return self._dx(dx_padded)


# --- compiled kernel (`fast` extra): backward's loop over offsets in one pass ------------------
@kernels.compiled
def _max_pool_backward_kernel(dy, winner, kw, sh, sw, dx_padded):
    """dx_padded += each dy at its window's winning offset i * kw + j."""
    n, c, ho, wo = dy.shape
    for a in range(n):
        for ch in range(c):
            for p in range(ho):
                for q in range(wo):
                    i, j = divmod(winner[a, ch, p, q], kw)
                    dx_padded[a, ch, p * sh + i, q * sw + j] += dy[a, ch, p, q]


class AvgPool2d(_Pool2d):
    """x: (N, C, H, W) -> y: (N, C, Ho, Wo), mean over each kh*kw window (zeros padded in)."""

    def forward(self, x):
        x_padded = self._pad(x)
        y = x_padded[self.offsets[0]].copy(order="K")
        for index in self.offsets[1:]:
            y += x_padded[index]
        y *= 1.0 / len(self.offsets)
        return y

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        dx_padded = self._new(xp, self.padded_shape, dy.dtype, fill=0)
        share = dy * (1.0 / len(self.offsets))
        for index in self.offsets:
            dx_padded[index] += share
        return self._dx(dx_padded)


class GlobalAvgPool2d(Module):
    """x: (N, C, H, W) -> y: (N, C): the mean over H and W (AdaptiveAvgPool2d(1) + Flatten)."""

    def forward(self, x):
        check_image(self, x)
        self.in_shape, self.in_channels_last = x.shape, channels_last(x)
        return x.mean(axis=(2, 3))

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        h, w = self.in_shape[2:]
        dx = new_image(xp, self.in_shape, dy.dtype, self.in_channels_last)
        dx[...] = (dy * (1.0 / (h * w)))[:, :, None, None]
        return dx

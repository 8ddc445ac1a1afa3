"""Sliding windows over NCHW images, shared by convolution and pooling.

`window_view` is im2col without a copy: a strided view whose [:, :, i, j] is the image
sampled at kernel offset (i, j). `add_window_grads` is its adjoint (col2im): it adds each
offset's gradient back into the padded image (with the `fast` extra, in one compiled pass
instead of kh*kw strided additions).
"""
from .. import backend
from . import kernels
from .module import channels_last, new_image


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def check_image(layer, x, channels=None):
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        c = "C" if channels is None else channels
        raise ValueError(f"{type(layer).__name__} expects input (N, {c}, H, W), "
                         f"got shape {tuple(x.shape)}")


def pad(x, padding, value=0.0):
    """Pad H and W by `padding` = (ph, pw) on both sides with `value` (in x's memory order)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    out = new_image(xp, (n, c, h + 2 * ph, w + 2 * pw), x.dtype, channels_last(x), fill=value)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def unpad(x, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return x[:, :, ph:x.shape[2] - ph, pw:x.shape[3] - pw]


def window_view(x_padded, kernel, stride, out_hw):
    """View (N, C, kh, kw, Ho, Wo) of a padded image: [..., i, j, :, :] is offset (i, j)."""
    xp = backend.get_array_module(x_padded)
    n, c = x_padded.shape[:2]
    s_n, s_c, s_h, s_w = x_padded.strides
    return xp.lib.stride_tricks.as_strided(
        x_padded, shape=(n, c, *kernel, *out_hw),
        strides=(s_n, s_c, s_h, s_w, s_h * stride[0], s_w * stride[1]))


def offset_slice(i, j, stride, out_hw):
    """Index of the positions that kernel offset (i, j) reads in a padded image."""
    return (slice(None), slice(None),
            slice(i, i + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(j, j + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def add_window_grads(dx_padded, dwindows, stride):
    """col2im: add dwindows (N, C, kh, kw, Ho, Wo) into dx_padded at the offsets they read."""
    if kernels.usable(dx_padded, dwindows):
        return _add_window_grads_kernel(dx_padded, dwindows, *stride)
    kh, kw, ho, wo = dwindows.shape[2:]
    for i in range(kh):
        for j in range(kw):
            dx_padded[offset_slice(i, j, stride, (ho, wo))] += dwindows[:, :, i, j]


@kernels.compiled
def _add_window_grads_kernel(dx_padded, dwindows, sh, sw):
    n, c, kh, kw, ho, wo = dwindows.shape
    for a in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for p in range(ho):
                        for q in range(wo):
                            dx_padded[a, ch, i + sh * p, j + sw * q] += dwindows[a, ch, i, j, p, q]

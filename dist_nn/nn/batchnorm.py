"""Batch normalisation (Ioffe & Szegedy), optionally synchronised across ranks (SyncBN).

With a communicator, forward allreduces one packed float64 vector [sum x, sum x^2, count] per
channel and backward one [sum dy, sum dy*xhat], so every rank normalises with the statistics
of the global batch, whatever each rank's share of it. Without one, the same code runs on the
local batch.

Accuracy: each rank sums x - K with K its own batch mean (in the data's dtype), so the float32
sums see centred data, and only then forms sum x and sum x^2 in float64. The variance
E[x^2] - E[x]^2 is thus taken in float64 and does not cancel even when |mean| >> std.

Fusion: with `relu = True` (set by `fuse_relu`) the layer also applies the ReLU that follows
it, whose module then passes through: one pass less each way, and with the compiled kernels
(batchnorm_kernels.py) forward and backward are two passes over memory each.

Speed: per-channel coefficients are spread to (C*L,) rows, so that every element-wise pass
broadcasts over the batch dimension only (NumPy's fast path).
"""
from .. import backend
from . import batchnorm_gpu, init, kernels
from .batchnorm_kernels import KERNELS
from .module import Module, Parameter, channels_last, grad_enabled


class _BatchNorm(Module):
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    input_dims = ()  # allowed x.ndim values

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, comm=None):
        super().__init__()
        xp = backend.xp
        self.num_features, self.eps, self.momentum, self.comm = num_features, eps, momentum, comm
        self.weight = (Parameter(xp.ones(num_features, dtype=backend.float_dtype),
                                 weight_decay=False) if affine else None)
        self.bias = Parameter(init.zeros(num_features), weight_decay=False) if affine else None
        self.running_mean = xp.zeros(num_features, dtype=backend.float_dtype)
        self.running_var = xp.ones(num_features, dtype=backend.float_dtype)
        self.num_batches_tracked = xp.zeros((), dtype=xp.int64)
        self.relu = False

    @property
    def synced(self):
        """True when statistics are summed over several ranks."""
        return self.comm is not None and self.comm.size > 1

    def _check(self, x):
        if x.ndim not in self.input_dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of "
                             f"{' or '.join(map(str, self.input_dims))} dimensions with "
                             f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}")

    def _view(self, x):
        """x as three dimensions, a view: (N, C, L) ("ncl"), or (N, L, C) ("nlc") when x is
        in channels-last memory (as NHWC convolutions hand it on)."""
        n, c = x.shape[:2]
        if self.layout == "nlc":
            return x.transpose(0, *range(2, x.ndim), 1).reshape(n, -1, c)
        return x.reshape(n, c, -1)

    def _unview(self, x3, shape):
        """The inverse of _view: x3 as an array of `shape`, in x3's memory."""
        if self.layout == "nlc":
            return x3.reshape(shape[0], *shape[2:], shape[1]).transpose(
                0, len(shape) - 1, *range(1, len(shape) - 1))
        return x3.reshape(shape)

    def _spread(self, per_channel, dtype):
        """(C,) -> (C*L,): one value per element of a sample, repeated along L ("ncl") or
        tiled L times ("nlc")."""
        xp = backend.get_array_module(per_channel)
        spread = xp.repeat if self.layout == "ncl" else xp.tile
        return spread(per_channel.astype(dtype, copy=False), self.length)

    def _centre(self, x3, shift, centred3):
        """centred3 = x3 - shift (per channel), as whole rows minus the spread shift."""
        xp = backend.get_array_module(x3)
        xp.subtract(x3.reshape(len(x3), -1), self._spread(shift, x3.dtype),
                    out=centred3.reshape(len(x3), -1))

    def _sum(self, *arrays):
        """Per-channel sum over the batch (and L) of the product of 3-D views."""
        xp = backend.get_array_module(arrays[0])
        return xp.einsum(",".join([self.layout] * len(arrays)) + "->c", *arrays)

    def forward(self, x):
        """Keeps one array for backward, x - K (fused with a ReLU, also the output, which is
        the ReLU's and the next layer's anyway)."""
        xp = backend.get_array_module(x)
        self._check(x)
        n = len(x)
        self.length = x[0, 0].size
        self.layout = "nlc" if channels_last(x) else "ncl"
        x3 = self._view(x)
        if batchnorm_gpu.usable(x3, self.running_mean):
            if self.training and not self.synced:
                self._check_count(n * self.length, n * self.length)
            return self._unview(batchnorm_gpu.forward(self, x3), x.shape)
        centred3 = xp.empty(x3.shape, dtype=x.dtype)  # x - K
        if self.training:
            shift = (self._sum(x3) * (1.0 / (n * self.length))).astype(x.dtype)
            mean, var = self._batch_statistics(x3, shift, centred3)
            self._update_running_stats(mean, var * (self.count / (self.count - 1)))
        else:
            shift = self.running_mean.astype(x.dtype)
            self._centre(x3, shift, centred3)
            self.count, mean, var = None, self.running_mean, self.running_var
        # xhat = (x - mean) * inv_std = (centred - offset) * inv_std
        offset = (mean - shift).astype(x.dtype)
        inv_std = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype)
        scale = inv_std if self.weight is None else self.weight.data * inv_std
        shift_out = -offset * scale
        if self.bias is not None:
            shift_out += self.bias.data
        # evaluation under no_grad keeps nothing: normalise x - K in place
        y3 = centred3 if not (self.training or grad_enabled()) else xp.empty_like(centred3)
        if kernels.usable(centred3, scale, shift_out, y3):
            KERNELS[self.layout].normalize(centred3, scale, shift_out, self.relu, y3)
        else:
            y = xp.multiply(centred3.reshape(n, -1), self._spread(scale, x.dtype),
                            out=y3.reshape(n, -1))
            y += self._spread(shift_out, x.dtype)
            if self.relu:
                xp.maximum(y, 0, out=y)
        self.keep(centred=centred3, y=y3 if self.relu else None)
        self.offset, self.inv_std = offset, inv_std
        return self._unview(y3, x.shape)

    def _batch_statistics(self, x3, shift, centred3):
        """(mean, biased variance) in float64 over the local or, synced, the global batch;
        fills centred3 with x - shift."""
        xp = backend.get_array_module(x3)
        c = self.num_features
        if kernels.usable(x3, shift, centred3):
            s1, s2 = xp.zeros(c), xp.zeros(c)
            KERNELS[self.layout].centre_and_sum(x3, shift, centred3, s1, s2)
        else:
            self._centre(x3, shift, centred3)
            s1 = self._sum(centred3).astype(xp.float64)
            s2 = self._sum(centred3, centred3).astype(xp.float64)
        k = shift.astype(xp.float64)
        local = centred3.size // c
        stats = xp.empty(2 * c + 1, dtype=xp.float64)
        stats[:c] = s1 + local * k                        # sum x
        stats[c:2 * c] = s2 + k * (2 * s1 + local * k)    # sum x^2
        stats[-1] = self.count = local
        if self.synced:
            self.comm.allreduce(stats)
            self.count = float(stats[-1])  # the global count
        self._check_count(local, self.count)
        mean = stats[:c] / self.count
        return mean, xp.maximum(stats[c:2 * c] / self.count - mean * mean, 0.0)

    def _check_count(self, local, count):
        if count < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than one value per "
                             f"channel, got {local} on this rank (global count {count:g})")

    def _update_running_stats(self, mean, unbiased_var):
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        dtype = self.running_mean.dtype
        self.running_mean *= 1.0 - m
        self.running_mean += (m * mean).astype(dtype)
        self.running_var *= 1.0 - m
        self.running_var += (m * unbiased_var).astype(dtype)

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        c, dtype = self.num_features, dy.dtype
        dy3 = self._view(dy)  # in forward's layout (a copy if dy comes in another)
        if batchnorm_gpu.usable(dy3):
            return self._unview(batchnorm_gpu.backward(self, dy3), dy.shape)
        centred3 = self.kept(self.centred)
        y3 = self.y if self.relu else dy3  # the ReLU's derivative comes from its output
        fast = kernels.usable(dy3, centred3, y3)
        if fast:
            sum_dy, sum_dy_centred = xp.zeros(c), xp.zeros(c)
            KERNELS[self.layout].backward_sums(dy3, centred3, y3, self.relu, sum_dy,
                                                sum_dy_centred)
        else:
            if self.relu:
                dy3 = dy3 * (y3 > 0)
            sum_dy = self._sum(dy3).astype(xp.float64)
            sum_dy_centred = self._sum(dy3, centred3)
        sums = xp.empty(2 * c, dtype=xp.float64)
        sums[:c] = sum_dy
        sums[c:] = self.inv_std * (sum_dy_centred - self.offset * sum_dy)  # sum dy * xhat
        if self.weight is not None:  # parameter gradients are this rank's share
            self.bias.grad += sums[:c].astype(dtype)
            self.weight.grad += sums[c:].astype(dtype)
        gain = self.inv_std if self.weight is None else self.weight.data * self.inv_std
        slope = xp.zeros(c, dtype=dtype)  # eval: the statistics are constants, y is affine in x
        constant = xp.zeros(c, dtype=dtype)
        if self.count is not None:
            if self.synced:
                self.comm.allreduce(sums)
            mean_dy = sums[:c] / self.count
            mean_dy_xhat = sums[c:] / self.count
            # dx = gain * (dy - mean(dy) - xhat * mean(dy xhat)), means over the global batch,
            #    = gain * dy + slope * centred + constant, with xhat = (centred - offset) * inv_std
            slope = (-gain * mean_dy_xhat * self.inv_std).astype(dtype)
            constant = (-gain * mean_dy - slope * self.offset).astype(dtype)
        dx3 = xp.empty(dy3.shape, dtype=dtype)
        if fast:
            KERNELS[self.layout].input_grad(dy3, centred3, y3, self.relu, gain.astype(dtype),
                                             slope, constant, dx3)
            return self._unview(dx3, dy.shape)
        rows = dy3.reshape(len(dy3), -1)
        dx = xp.multiply(rows, self._spread(gain, dtype), out=dx3.reshape(rows.shape))
        if self.count is not None:
            dx += centred3.reshape(rows.shape) * self._spread(slope, dtype)
            dx += self._spread(constant, dtype)
        return self._unview(dx3, dy.shape)

    def extra_repr(self):
        sync = ", sync" if self.comm is not None else ""
        relu = ", then ReLU" if self.relu else ""
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}{sync}{relu}"


def fuse_relu(norm, relu):
    """Let BatchNorm `norm` apply the ReLU module `relu` that always runs right after it (for
    model builders): `relu` then passes through. Both modules stay, with their names and
    state; only the work moves, saving a pass each way."""
    norm.relu = True
    relu.fused = True


class BatchNorm1d(_BatchNorm):
    """x: (N, C) or (N, C, L) -> same shape; statistics per channel over N (and L)."""
    input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """x: (N, C, H, W) -> same shape; statistics per channel over N, H and W."""
    input_dims = (4,)

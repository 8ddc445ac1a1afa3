"""Batch normalisation (Ioffe & Szegedy), optionally synchronised across ranks (SyncBN).

With a communicator, forward allreduces one packed float64 vector [sum x, sum x^2, count] per
channel and backward one [sum dy, sum dy*xhat], so every rank normalises with the statistics
of the global batch, whatever each rank's share of it. Without one, the same code runs on the
local batch.

Accuracy: each rank sums x - K with K its own batch mean (in the data's dtype), so the float32
sums see centred data, and only then forms sum x and sum x^2 in float64. The variance
E[x^2] - E[x]^2 is thus taken in float64 and does not cancel even when |mean| >> std.

Speed: per-channel coefficients are spread to (C*L,) rows, so that every element-wise pass
broadcasts over the batch dimension only (NumPy's fast path).
"""
from .. import backend
from . import init
from .module import Module, Parameter


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

    @property
    def synced(self):
        """True when statistics are summed over several ranks."""
        return self.comm is not None and self.comm.size > 1

    def _check(self, x):
        if x.ndim not in self.input_dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of "
                             f"{' or '.join(map(str, self.input_dims))} dimensions with "
                             f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}")

    def _spread(self, per_channel, dtype):
        """(C,) -> (C*L,): one value per element of a sample, repeated along L."""
        xp = backend.get_array_module(per_channel)
        return xp.repeat(per_channel.astype(dtype, copy=False), self.length)

    def forward(self, x):
        xp = backend.get_array_module(x)
        self._check(x)
        n, c = x.shape[:2]
        self.length = x[0, 0].size
        rows = x.reshape(n, -1)  # (N, C*L)
        x3 = x.reshape(n, c, self.length)
        if self.training:
            shift = (xp.einsum("ncl->c", x3) * (1.0 / (n * self.length))).astype(x.dtype)
        else:
            shift = self.running_mean.astype(x.dtype)
        self.centred = rows - self._spread(shift, x.dtype)  # x - K
        centred3 = self.centred.reshape(x3.shape)
        if self.training:
            mean, var = self._batch_statistics(centred3, shift)
            self._update_running_stats(mean, var * (self.count / (self.count - 1)))
        else:
            self.count, mean, var = None, self.running_mean, self.running_var
        # xhat = (x - mean) * inv_std = (centred - offset) * inv_std
        self.offset = (mean - shift).astype(x.dtype)
        self.inv_std = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype)
        scale = self.inv_std if self.weight is None else self.weight.data * self.inv_std
        shift_out = -self.offset * scale
        if self.bias is not None:
            shift_out += self.bias.data
        y = self.centred * self._spread(scale, x.dtype)
        y += self._spread(shift_out, x.dtype)
        return y.reshape(x.shape)

    def _batch_statistics(self, centred3, shift):
        """(mean, biased variance) in float64 over the local or, synced, the global batch."""
        xp = backend.get_array_module(centred3)
        c = self.num_features
        s1 = xp.einsum("ncl->c", centred3).astype(xp.float64)
        s2 = xp.einsum("ncl,ncl->c", centred3, centred3).astype(xp.float64)
        k = shift.astype(xp.float64)
        local = centred3.shape[0] * centred3.shape[2]
        stats = xp.empty(2 * c + 1, dtype=xp.float64)
        stats[:c] = s1 + local * k                        # sum x
        stats[c:2 * c] = s2 + k * (2 * s1 + local * k)    # sum x^2
        stats[-1] = self.count = local
        if self.synced:
            self.comm.allreduce(stats)
            self.count = float(stats[-1])  # the global count (a device sync only in SyncBN)
        if self.count < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than one value per "
                             f"channel, got {local} on this rank (global count {self.count:g})")
        mean = stats[:c] / self.count
        return mean, xp.maximum(stats[c:2 * c] / self.count - mean * mean, 0.0)

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
        dy3 = dy.reshape(dy.shape[0], c, self.length)
        sum_dy = xp.einsum("ncl->c", dy3).astype(xp.float64)
        sum_dy_centred = xp.einsum("ncl,ncl->c", dy3, self.centred.reshape(dy3.shape))
        sums = xp.empty(2 * c, dtype=xp.float64)
        sums[:c] = sum_dy
        sums[c:] = self.inv_std * (sum_dy_centred - self.offset * sum_dy)  # sum dy * xhat
        if self.weight is not None:  # parameter gradients are this rank's share
            self.bias.grad += sums[:c].astype(dtype)
            self.weight.grad += sums[c:].astype(dtype)
        gain = self.inv_std if self.weight is None else self.weight.data * self.inv_std
        rows = dy.reshape(dy.shape[0], -1)
        if self.count is None:  # eval: the statistics are constants, y is affine in x
            return (rows * self._spread(gain, dtype)).reshape(dy.shape)
        if self.synced:
            self.comm.allreduce(sums)
        mean_dy = sums[:c] / self.count
        mean_dy_xhat = sums[c:] / self.count
        # dx = gain * (dy - mean(dy) - xhat * mean(dy xhat)), means over the global batch,
        #    = gain * dy + slope * centred + constant, with xhat = (centred - offset) * inv_std
        slope = -gain * mean_dy_xhat * self.inv_std
        constant = -gain * mean_dy - slope * self.offset
        dx = rows * self._spread(gain, dtype)
        dx += self.centred * self._spread(slope, dtype)
        dx += self._spread(constant, dtype)
        return dx.reshape(dy.shape)

    def extra_repr(self):
        sync = ", sync" if self.comm is not None else ""
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}{sync}"


class BatchNorm1d(_BatchNorm):
    """x: (N, C) or (N, C, L) -> same shape; statistics per channel over N (and L)."""
    input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """x: (N, C, H, W) -> same shape; statistics per channel over N, H and W."""
    input_dims = (4,)

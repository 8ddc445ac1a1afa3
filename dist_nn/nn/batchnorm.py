"""Batch normalisation (Ioffe & Szegedy), optionally synchronised across ranks (SyncBN).

With a communicator, forward allreduces one packed vector [sum x, sum x^2, count] per channel
and backward one [sum dy, sum dy*xhat], so every rank normalises with the statistics of the
global batch, whatever each rank's share of it. Without one, the same code runs on the local
batch. Sums are taken of x - running_mean (identical on all ranks), which keeps
E[x^2] - E[x]^2 free of cancellation once the running mean tracks the data, and they travel
in float64 so that counts and sums stay exact.
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

    def _as_ncl(self, x):
        if x.ndim not in self.input_dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects input of "
                             f"{' or '.join(map(str, self.input_dims))} dimensions with "
                             f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], x.shape[1], -1)

    @property
    def synced(self):
        """True when statistics are summed over several ranks."""
        return self.comm is not None and self.comm.size > 1

    def forward(self, x):
        xp = backend.get_array_module(x)
        x3 = self._as_ncl(x)
        if not self.training:
            scale = self.running_var + self.eps
            xp.sqrt(scale, out=scale)
            scale = (self.weight.data if self.weight is not None else 1.0) / scale
            shift = (self.bias.data if self.bias is not None else 0.0) - self.running_mean * scale
            return (x3 * scale[:, None] + shift[:, None]).reshape(x.shape)

        shifted = x3 - self.running_mean[:, None]
        stats = xp.empty(2 * self.num_features + 1, dtype=xp.float64)
        stats[:self.num_features] = xp.einsum("ncl->c", shifted)
        stats[self.num_features:-1] = xp.einsum("ncl,ncl->c", shifted, shifted)
        stats[-1] = count = x3.shape[0] * x3.shape[2]
        if self.synced:
            self.comm.allreduce(stats)
            count = float(stats[-1])  # the global count (a device sync only in SyncBN)
        if count < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than one value per "
                             f"channel, got input shape {tuple(x.shape)} (global count {count:g})")
        shift_mean = stats[:self.num_features] / count  # mean - running_mean
        var = xp.maximum(stats[self.num_features:-1] / count - shift_mean ** 2, 0.0)
        mean = (shift_mean + self.running_mean).astype(x.dtype)
        self.count = count
        self.inv_std = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype)
        self._update_running_stats(mean, var * (count / (count - 1)))

        xhat = shifted
        xhat -= shift_mean.astype(x.dtype)[:, None]
        xhat *= self.inv_std[:, None]
        self.xhat = xhat
        if self.weight is None:
            return xhat.reshape(x.shape).copy()
        return (xhat * self.weight.data[:, None] + self.bias.data[:, None]).reshape(x.shape)

    def _update_running_stats(self, mean, unbiased_var):
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += (m * unbiased_var).astype(self.running_var.dtype)

    def backward(self, dy):
        xp = backend.get_array_module(dy)
        dy3 = dy.reshape(self.xhat.shape)
        c = self.num_features
        sums = xp.empty(2 * c, dtype=xp.float64)
        sums[:c] = xp.einsum("ncl->c", dy3)
        sums[c:] = xp.einsum("ncl,ncl->c", dy3, self.xhat)
        if self.weight is not None:  # parameter gradients are this rank's share
            self.bias.grad += sums[:c].astype(dy.dtype)
            self.weight.grad += sums[c:].astype(dy.dtype)
        if self.synced:
            self.comm.allreduce(sums)
        mean_dy = (sums[:c] / self.count).astype(dy.dtype)
        mean_dy_xhat = (sums[c:] / self.count).astype(dy.dtype)
        gain = self.inv_std if self.weight is None else self.weight.data * self.inv_std
        # dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat)), means over the global batch
        dx = self.xhat * -mean_dy_xhat[:, None]
        dx += dy3
        dx -= mean_dy[:, None]
        dx *= gain[:, None]
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

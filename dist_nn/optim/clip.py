"""Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_.

In data-parallel training, call it on the synchronized gradient (after `GradSync.wait()`,
and after unscaling under mixed precision): every rank then computes the same norm and
clips alike.
"""
import math

from .. import backend
from .flat import FlatParameters, FlatShard

FLAT = (FlatParameters, FlatShard)

EPS = 1e-6  # torch's: the clip coefficient is max_norm / (total_norm + 1e-6)


def squared_norm(values):
    """sum(values^2), accumulated in float64 (no float32 overflow), as a 0-d array on the
    values' device: on a GPU nothing is read back until the caller does."""
    xp = backend.get_array_module(values)
    return xp.square(values, dtype=xp.float64).sum()


def grad_norm(flat_or_params):
    """The L2 norm of all gradients together, as a Python float (Inf/NaN when any gradient
    is). A flat buffer takes one pass, accumulated in float64; a list of parameters, one norm
    each, then the norm of those norms (torch's order)."""
    if isinstance(flat_or_params, FLAT):
        return math.sqrt(float(squared_norm(flat_or_params.grad)))
    norms = [float(backend.get_array_module(p.grad).linalg.norm(p.grad.reshape(-1)))
             for p in flat_or_params if p.requires_grad]
    return math.sqrt(math.fsum(n * n for n in norms))


def clip_grad_norm(flat_or_params, max_norm, total=None):
    """Scale the gradients in place so that their global L2 norm is at most max_norm (a
    FlatParameters, a FlatShard or an iterable of Parameters); returns the norm before
    clipping. `total`: that norm when already known (a shard's: the global one)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    flat_or_params = flat_or_params if isinstance(flat_or_params, FLAT) \
        else list(flat_or_params)
    if total is None:
        total = grad_norm(flat_or_params)
    coefficient = min(max_norm / (total + EPS), 1.0)  # NaN stays NaN, as in torch
    if coefficient < 1.0 or math.isnan(coefficient):
        grads = [flat_or_params.grad] if isinstance(flat_or_params, FLAT) \
            else [p.grad for p in flat_or_params if p.requires_grad]
        for g in grads:
            g *= coefficient
    return total

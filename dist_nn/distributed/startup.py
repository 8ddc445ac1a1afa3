"""Start-up of a distributed run: identical replicas on every rank, proven by what they
compute, not only by their names and shapes."""
import hashlib
import math

import numpy

from .. import backend


def broadcast_state(model, comm, root=0):
    """Give every rank the root's parameters and buffers (before the first step)."""
    for array in model.state_arrays().values():
        comm.bcast(array, root=root)


class ReplicasDiffer(RuntimeError):
    """The ranks built different models or were launched with different configurations:
    raised alike on every rank."""


def fingerprint(model, config=None):
    """A short digest that must agree on all ranks: parameter and buffer names, shapes and
    dtypes, and the run configuration."""
    parts = [f"{name}:{tuple(a.shape)}:{a.dtype}" for name, a in model.state_arrays().items()]
    parts.append(repr(config))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def check_same_everywhere(model, comm, config=None):
    """Raise on every rank, naming the odd ones, when ranks built different models or were
    launched with different configurations."""
    prints = comm.allgather_obj(fingerprint(model, config))
    odd = [r for r, p in enumerate(prints) if p != prints[0]]
    if odd:
        raise ReplicasDiffer(f"ranks {odd} differ from rank 0 in their model or configuration "
                           f"(fingerprints {prints[0]} vs {prints[odd[0]]}): launch every rank "
                           "with the same code and config")


PROBE_BATCH = 4
PROBE_RTOL = 1e-3  # ranks on other CPUs or GPUs round differently; other code differs by far


def check_same_computation(model, comm, input_shape, seed=0):
    """Raise on every rank, naming the odd ones, when replicas with the same weights compute
    different functions (ReLU on one rank, Tanh on another: the same names and shapes). Each
    rank runs the same seeded batch forward and backward in eval mode (no statistics
    updated, no dropout: no training state touched) and compares a projection of the output
    and every gradient's norm; the model's buffers and gradients are left as they were."""
    state = model.state_dict()
    backend.seed(seed, 0, 1)  # the same draws on every rank, should a module draw any
    probe = numpy.random.default_rng(seed)
    model.eval()
    x = backend.to_device(probe.standard_normal((PROBE_BATCH, *input_shape)),
                          dtype=backend.float_dtype)
    y = model.forward(x)
    weights = backend.to_device(probe.standard_normal(y.shape), dtype=y.dtype)
    model.zero_grad()
    model.backward(weights)
    host = [backend.to_host(a).astype(numpy.float64).ravel() for a in
            [y * weights] + [p.grad for _, p in model.named_parameters() if p.requires_grad]]
    summary = [float(host[0].sum())] + [float(g @ g) for g in host[1:]]
    model.zero_grad()
    model.load_state_dict(state)
    model.train()
    summaries = comm.allgather_obj(summary)
    odd = [r for r, other in enumerate(summaries) if not _close(other, summaries[0])]
    if odd:
        raise ReplicasDiffer(f"ranks {odd} compute another function than rank 0 with the same "
                           "weights (a probe batch's output or gradients differ): launch every "
                           "rank with the same code")


def _close(a, b):
    """Equal up to rounding (NaN alike: a model that gives NaN is the guards' to name)."""
    return len(a) == len(b) and all(
        (math.isnan(u) and math.isnan(v)) or
        math.isclose(u, v, rel_tol=PROBE_RTOL, abs_tol=1e-9)
        for u, v in zip(a, b))


def raise_together(comm, error, cls=RuntimeError):
    """After a check that ran on every rank: if any rank failed (error not None), every rank
    raises `cls` with the first failing rank's message, so that all stop alike instead of
    some waiting forever in the next collective."""
    messages = comm.allgather_obj(None if error is None else str(error))
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        raise cls(f"rank {rank}: {message}" if comm.size > 1 else message)

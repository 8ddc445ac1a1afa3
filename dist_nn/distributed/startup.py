"""Start-up of a distributed run: identical replicas on every rank."""
import hashlib


def broadcast_state(model, comm, root=0):
    """Give every rank the root's parameters and buffers (before the first step)."""
    for array in model.state_arrays().values():
        comm.bcast(array, root=root)


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
        raise RuntimeError(f"ranks {odd} differ from rank 0 in their model or configuration "
                           f"(fingerprints {prints[0]} vs {prints[odd[0]]}): launch every rank "
                           "with the same code and config")


def raise_together(comm, error, cls=RuntimeError):
    """After a check that ran on every rank: if any rank failed (error not None), every rank
    raises `cls` with the first failing rank's message, so that all stop alike instead of
    some waiting forever in the next collective."""
    messages = comm.allgather_obj(None if error is None else str(error))
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        rank, message = failed[0]
        raise cls(f"rank {rank}: {message}" if comm.size > 1 else message)

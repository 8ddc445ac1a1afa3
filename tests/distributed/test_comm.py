"""Communicators: one documented interface; MPI under a real mpiexec, and the single-process
one."""
import gc
import inspect
import weakref

import numpy as np
import pytest

from dist_nn.distributed import (Communicator, LocalCommunicator, MPICommunicator,
                                 NCCLCommunicator, Watchdog, chunk_bounds, communicator)
from tests.distributed.conftest import WORLD_SIZES

METHODS = [name for name, member in vars(Communicator).items()
           if callable(member) and not name.startswith("_")]


@pytest.mark.parametrize("kind", [LocalCommunicator, MPICommunicator, NCCLCommunicator,
                                  Watchdog], ids=lambda kind: kind.__name__)
def test_every_communicator_offers_the_protocol_with_its_signatures(kind):
    assert len(METHODS) == 13
    for name in METHODS:
        expected = inspect.signature(getattr(Communicator, name)).parameters
        offered = inspect.signature(getattr(kind, name)).parameters
        assert list(offered) == list(expected), f"{kind.__name__}.{name}{tuple(offered)}"
        assert [p.default for p in offered.values()] == \
            [p.default for p in expected.values()], f"{kind.__name__}.{name}: defaults"
    assert isinstance(LocalCommunicator(), Communicator)


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_mpi_operations(collectives, n):
    ops = collectives[n]["ops"]
    assert ops["allreduce"] == [n * (n + 1) / 2] * 5
    assert ops["max"] == [n - 1]
    assert ops["iallreduce"] == (np.arange(4.0) * n * (n + 1) / 2).tolist()
    assert ops["bcast"] == [7.0] * 3  # from the last rank
    # JSON turned the lengths into strings
    assert sorted(map(int, ops["reduce_scatter"])) == sorted({4 * n, 4 * n + 1, n - 1})
    for length, per_rank in ops["reduce_scatter"].items():
        summed = np.arange(int(length)) * n * (n + 1) / 2  # rank r sent arange * (r + 1)
        bounds = chunk_bounds(int(length), n)
        assert [mine for mine, _ in per_rank] == [summed[b:e].tolist() for b, e in bounds]
        assert [pending for _, pending in per_rank] == \
            [(summed[b:e] + np.arange(b, e) * n).tolist() for b, e in bounds]
    for gathered in ops["allgather"]:  # every rank holds every chunk in its place
        for length, (everything, pending) in gathered.items():
            bounds = chunk_bounds(int(length), n)
            assert everything == (np.arange(int(length)) + 0.5).tolist()
            assert pending == [float(r) for r, (b, e) in enumerate(bounds) for _ in range(b, e)]
    assert ops["allreduce_obj"] == n * (n - 1) // 2
    assert ops["bcast_obj"] == {"from": 0}
    assert ops["allgather_obj"] == [r * r for r in range(n)]
    # one node: local ranks from the shared-memory split
    assert ops["local"] == [[r, n] for r in range(n)]
    assert ops["protocol"]  # rank, size, local_rank, local_size and every method


def test_local_communicator_is_the_identity():
    comm = LocalCommunicator()
    buf = np.arange(3.0)
    comm.allreduce(buf)
    comm.iallreduce(buf).wait()
    comm.bcast(buf)
    np.testing.assert_array_equal(buf, np.arange(3.0))
    out, back = np.zeros(3), np.zeros(3)
    comm.ireduce_scatter(buf, out).wait()
    comm.iallgather(out * 2, back).wait()
    np.testing.assert_array_equal(back, np.arange(3.0) * 2)
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (0, 1, 0, 1)
    assert comm.allreduce_obj(5) == 5 and comm.allgather_obj(2) == [2]
    with pytest.raises(ValueError, match="reduction op"):
        comm.allreduce(buf, op="prod")


@pytest.mark.parametrize("n, size", [(12, 4), (13, 4), (3, 4), (0, 2), (7, 1)])
def test_chunks_cover_the_vector_in_rank_order_none_longer_than_the_first(n, size):
    bounds = chunk_bounds(n, size)
    assert len(bounds) == size and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [end - start for start, end in bounds]
    assert max(lengths) == -(-n // size) and min(lengths) >= 0


def test_auto_without_mpiexec_is_a_single_process():
    assert isinstance(communicator("auto"), LocalCommunicator)
    with pytest.raises(ValueError, match="communicator must be one of"):
        communicator("gloo")


@pytest.mark.parametrize("start", ["iallreduce", "ireduce_scatter", "iallgather"])
def test_a_pending_collective_keeps_its_buffers_until_it_completes(start):
    """MPI reads and writes the buffers of a non-blocking collective until it completes: a
    temporary the caller drops (a compressed bucket) must not be freed and reused under it
    (with Open MPI it was: a ZeRO-1 run with fp16 compression summed garbage)."""
    comm = MPICommunicator()  # a world of one, in this process
    buf, out = np.ones(64, np.float16), np.empty(64, np.float16)
    alive = weakref.ref(buf)
    arguments = (buf,) if start == "iallreduce" else (buf, out)
    handle = getattr(comm, start)(*arguments)
    del buf, arguments
    gc.collect()
    assert alive() is not None
    handle.wait()
    gc.collect()
    assert alive() is None

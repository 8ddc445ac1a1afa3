"""Communicators: MPI under a real mpiexec, and the single-process one."""
import numpy as np
import pytest

from dist_nn.dist import LocalCommunicator, communicator
from tests.dist.conftest import WORLD_SIZES


@pytest.mark.parametrize("n", WORLD_SIZES)
def test_mpi_operations(collectives, n):
    ops = collectives[n]["ops"]
    assert ops["allreduce"] == [n * (n + 1) / 2] * 5
    assert ops["max"] == [n - 1]
    assert ops["iallreduce"] == (np.arange(4.0) * n * (n + 1) / 2).tolist()
    assert ops["bcast"] == [7.0] * 3  # from the last rank
    assert ops["allreduce_obj"] == n * (n - 1) // 2
    assert ops["bcast_obj"] == {"from": 0}
    assert ops["allgather_obj"] == [r * r for r in range(n)]
    # one node: local ranks from the shared-memory split
    assert ops["local"] == [[r, n] for r in range(n)]


def test_local_communicator_is_the_identity():
    comm = LocalCommunicator()
    buf = np.arange(3.0)
    comm.allreduce(buf)
    comm.iallreduce(buf).wait()
    comm.bcast(buf)
    np.testing.assert_array_equal(buf, np.arange(3.0))
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (0, 1, 0, 1)
    assert comm.allreduce_obj(5) == 5 and comm.allgather_obj(2) == [2]
    with pytest.raises(ValueError, match="reduction op"):
        comm.allreduce(buf, op="prod")


def test_auto_without_mpiexec_is_a_single_process():
    assert isinstance(communicator("auto"), LocalCommunicator)
    with pytest.raises(ValueError, match="communicator must be one of"):
        communicator("gloo")

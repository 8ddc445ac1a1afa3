"""NCCL's API as CuPy 14.2 wraps it, carried out over MPI: a collective maps its raw device
pointers back to memory (the stand-in's device memory is host memory) and runs the matching
MPI collective on a communicator split from COMM_WORLD in the given rank order, so that 2 or 4
ranks under mpiexec really reduce. Each collective is one kernel on the stream it is given.
It blocks until every rank has called it, which NCCL does not: ranks must call collectives in
the same order, as NCCL requires anyway."""
import ctypes
import os
import socket

import numpy

from cupy.cuda import _context

__all__ = ["NCCL_CHAR", "NCCL_DOUBLE", "NCCL_FLOAT", "NCCL_FLOAT16", "NCCL_FLOAT32",
           "NCCL_FLOAT64", "NCCL_HALF", "NCCL_INT", "NCCL_INT32", "NCCL_INT64", "NCCL_INT8",
           "NCCL_MAX", "NCCL_MIN", "NCCL_PROD", "NCCL_SUM", "NCCL_UINT32", "NCCL_UINT64",
           "NCCL_UINT8", "NcclCommunicator", "NcclError", "get_unique_id"]

# ncclDataType_t and ncclRedOp_t, with NCCL's values.
NCCL_INT8 = NCCL_CHAR = 0
NCCL_UINT8 = 1
NCCL_INT32 = NCCL_INT = 2
NCCL_UINT32 = 3
NCCL_INT64 = 4
NCCL_UINT64 = 5
NCCL_FLOAT16 = NCCL_HALF = 6
NCCL_FLOAT32 = NCCL_FLOAT = 7
NCCL_FLOAT64 = NCCL_DOUBLE = 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3

_DTYPES = {NCCL_INT8: numpy.int8, NCCL_UINT8: numpy.uint8, NCCL_INT32: numpy.int32,
           NCCL_UINT32: numpy.uint32, NCCL_INT64: numpy.int64, NCCL_UINT64: numpy.uint64,
           NCCL_FLOAT16: numpy.float16, NCCL_FLOAT32: numpy.float32,
           NCCL_FLOAT64: numpy.float64}
_UNIQUE_ID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES
_ERRORS = {4: ("NCCL_ERROR_INVALID_ARGUMENT", "invalid argument"),
           5: ("NCCL_ERROR_INVALID_USAGE", "invalid usage")}


class NcclError(RuntimeError):
    """A failed NCCL call (`status`: NCCL's result code)."""

    def __init__(self, status, detail=""):
        self.status = status
        name, text = _ERRORS[status]
        super().__init__(f"{name}: {text}" + (f" ({detail})" if detail else ""))


def get_unique_id():
    """The id rank 0 makes and sends to the others: bytes, as CuPy 14 returns it."""
    return os.urandom(_UNIQUE_ID_BYTES)


def _memory(ptr, count, datatype):
    """The `count` values of `datatype` at device address `ptr`, as a NumPy view."""
    dtype = numpy.dtype(_DTYPES[datatype])
    if count == 0:
        return numpy.empty(0, dtype)
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return numpy.frombuffer(raw, dtype=dtype, count=count)


class NcclCommunicator:
    """One rank's NCCL communicator: `ndev` ranks that share `commId`, this one `rank`."""

    def __init__(self, ndev, commId, rank):
        if not isinstance(commId, bytes):
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got "
                            f"{type(commId).__name__})")
        from mpi4py import MPI
        self._MPI = MPI
        _context.touch()
        self._device = _context.current_device_id()
        self._comm = MPI.COMM_WORLD.Split(0, rank)  # its own communicator, in NCCL's order
        if self._comm.Get_size() != ndev or self._comm.Get_rank() != rank:
            raise NcclError(5, f"{ndev} ranks asked, rank {rank}, but MPI has "
                               f"{self._comm.Get_size()} with this one at {self._comm.Get_rank()}")
        peers = self._comm.allgather((commId, socket.gethostname(), self._device))
        if len({peer[0] for peer in peers}) != 1:
            raise NcclError(4, "the ranks were given different unique ids")
        places = [peer[1:] for peer in peers]
        if len(set(places)) != len(places):
            raise NcclError(5, f"duplicate GPU detected: ranks on (host, device) {places}")
        self._ops = {NCCL_SUM: MPI.SUM, NCCL_PROD: MPI.PROD, NCCL_MAX: MPI.MAX,
                     NCCL_MIN: MPI.MIN}

    def _communicator(self):
        if self._comm is None:
            raise NcclError(5, "the communicator was destroyed or aborted")
        return self._comm

    def _launched(self, stream):
        _context.launch(1, _context.stream_at(stream))

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        recv = _memory(recvbuf, count, datatype)
        send = self._MPI.IN_PLACE if sendbuf == recvbuf else _memory(sendbuf, count, datatype)
        self._communicator().Allreduce(send, recv, op=self._ops[op])
        self._launched(stream)

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        comm = self._communicator()
        send = _memory(sendbuf, recvcount * comm.Get_size(), datatype)
        comm.Reduce_scatter_block(send, _memory(recvbuf, recvcount, datatype),
                                  op=self._ops[op])
        self._launched(stream)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        comm = self._communicator()
        recv = _memory(recvbuf, count * comm.Get_size(), datatype)
        in_place = sendbuf == recvbuf + comm.Get_rank() * count * recv.itemsize
        comm.Allgather(self._MPI.IN_PLACE if in_place else _memory(sendbuf, count, datatype),
                       recv)
        self._launched(stream)

    def bcast(self, buff, count, datatype, root, stream):
        self._communicator().Bcast(_memory(buff, count, datatype), root=root)
        self._launched(stream)

    def rank_id(self):
        return self._communicator().Get_rank()

    def size(self):
        return self._communicator().Get_size()

    def device_id(self):
        return self._device

    def abort(self):
        """Stop using the communicator (from any thread: frees nothing another thread may be
        using)."""
        self._comm = None

    def destroy(self):
        if self._comm is not None:
            self._comm.Free()
            self._comm = None

"""Communicators: one interface over a single process, MPI (mpi4py) and NCCL (CuPy GPUs).

    comm.rank, comm.size, comm.local_rank, comm.local_size
    comm.allreduce(buf, op="sum")   in place, blocking
    comm.iallreduce(buf) -> handle  in place sum, non-blocking; handle.wait()
    comm.bcast(buf, root=0)         in place
    comm.allreduce_obj(value, op), comm.bcast_obj(value, root), comm.allgather_obj(value)
    comm.barrier(), comm.abort(code)

Arrays may be NumPy or CuPy. MPI moves CuPy arrays through pinned host buffers unless told
the MPI library is CUDA-aware; NCCL moves them on the GPU and uses MPI for everything else.
"""
import os
import sys
import time

import numpy

from .. import backend

OPS = ("sum", "max", "min")
ABORT_GRACE_S = 1.0


class Done:
    """The handle of an operation that has already completed."""

    def wait(self):
        pass

    def test(self):
        return True


class LocalCommunicator:
    """One process: every collective is the identity. Needs no MPI."""
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce(self, buf, op="sum"):
        _check_op(op)

    def iallreduce(self, buf):
        return Done()

    def bcast(self, buf, root=0):
        pass

    def allreduce_obj(self, value, op="sum"):
        _check_op(op)
        return value

    def bcast_obj(self, value, root=0):
        return value

    def allgather_obj(self, value):
        return [value]

    def barrier(self):
        pass

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # also from a background thread, which sys.exit would not end


class _MPIRequest:
    """A pending Iallreduce; with host staging, wait() also copies the result back."""

    def __init__(self, request, device_buf=None, host_buf=None):
        self.request, self.device_buf, self.host_buf = request, device_buf, host_buf

    def test(self):
        return self.request.Test()  # also drives MPI's progress engine

    def wait(self):
        self.request.Wait()
        if self.device_buf is not None:
            self.device_buf.set(self.host_buf)
            self.device_buf = None


class MPICommunicator:
    """MPI through mpi4py. The local rank and size come from a shared-memory split of the
    communicator (the ranks on this node), not from launcher-specific variables."""

    def __init__(self, comm=None, cuda_aware=False):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.cuda_aware = cuda_aware
        self._pinned = {}  # (size, dtype) -> pinned host staging buffer
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def _staged(self, buf):
        """A pinned host copy of a CuPy array (None for host arrays or CUDA-aware MPI)."""
        if self.cuda_aware or isinstance(buf, numpy.ndarray):
            return None
        key = (buf.size, buf.dtype.str)
        if key not in self._pinned:
            import cupyx
            self._pinned[key] = cupyx.empty_pinned(buf.size, dtype=buf.dtype)
        host = self._pinned[key].reshape(buf.shape)
        buf.get(out=host)
        return host

    def allreduce(self, buf, op="sum"):
        _check_op(op)
        host = self._staged(buf)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf if host is None else host, op=self._ops[op])
        if host is not None:
            buf.set(host)

    def iallreduce(self, buf):
        host = self._staged(buf)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buf if host is None else host,
                                       op=self.MPI.SUM)
        return _MPIRequest(request, None if host is None else buf, host)

    def bcast(self, buf, root=0):
        host = self._staged(buf)
        self.comm.Bcast(buf if host is None else host, root=root)
        if host is not None:
            buf.set(host)

    def allreduce_obj(self, value, op="sum"):
        _check_op(op)
        return self.comm.allreduce(value, op=self._ops[op])

    def bcast_obj(self, value, root=0):
        return self.comm.bcast(value, root=root)

    def allgather_obj(self, value):
        return self.comm.allgather(value)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        # MPI_Abort takes every process down at once, and the launcher may drop output still
        # on its way (seen with MPICH's hydra): give the message a moment to get out first
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)


class _NCCLRequest:
    """A pending NCCL allreduce on the communication stream."""

    def __init__(self, event):
        self.event = event

    def test(self):
        return self.event.done

    def wait(self):
        # later work on the compute stream waits for the allreduce; the host does not block
        backend.cupy.cuda.get_current_stream().wait_event(self.event)


class NCCLCommunicator(MPICommunicator):
    """NCCL for CuPy arrays (allreduce, iallreduce, bcast); MPI for objects, host arrays,
    barrier and abort. One GPU per rank: NCCL refuses two ranks on one GPU. Non-blocking
    allreduces run on their own stream, ordered after the work queued before them."""

    def __init__(self, comm=None):
        super().__init__(comm)
        from cupy.cuda import nccl
        self.nccl = nccl
        uid = self.bcast_obj(nccl.get_unique_id() if self.rank == 0 else None)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = backend.cupy.cuda.Stream(non_blocking=True)
        self._types = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
                       numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64,
                       numpy.dtype(numpy.int64): nccl.NCCL_INT64}
        self._nccl_ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def _is_device(self, buf):
        return not isinstance(buf, numpy.ndarray)

    def allreduce(self, buf, op="sum"):
        if not self._is_device(buf):
            return super().allreduce(buf, op)
        _check_op(op)
        stream = backend.cupy.cuda.get_current_stream()
        self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._types[buf.dtype],
                                 self._nccl_ops[op], stream.ptr)

    def iallreduce(self, buf):
        if not self._is_device(buf):
            return super().iallreduce(buf)
        cupy = backend.cupy
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._types[buf.dtype],
                                 self.nccl.NCCL_SUM, self.stream.ptr)
        return _NCCLRequest(self.stream.record())

    def bcast(self, buf, root=0):
        if not self._is_device(buf):
            return super().bcast(buf, root)
        stream = backend.cupy.cuda.get_current_stream()
        self.nccl_comm.bcast(buf.data.ptr, buf.size, self._types[buf.dtype], root, stream.ptr)


def _check_op(op):
    if op not in OPS:
        raise ValueError(f"reduction op must be one of {OPS}, got {op!r}")


KINDS = ("auto", "local", "mpi", "nccl")


def communicator(kind="auto", cuda_aware=False):
    """The communicator of this process. "auto": MPI when launched with more than one rank
    (mpi4py importable), else the single-process one; "nccl" needs CuPy and a GPU per rank."""
    if kind not in KINDS:
        raise ValueError(f"communicator must be one of {KINDS}, got {kind!r}")
    if kind == "local":
        return LocalCommunicator()
    if kind == "auto":
        try:
            comm = MPICommunicator(cuda_aware=cuda_aware)
        except (ImportError, RuntimeError):  # no mpi4py, or no MPI library for it to load
            return LocalCommunicator()
        return comm if comm.size > 1 else LocalCommunicator()
    if kind == "nccl":
        return NCCLCommunicator()
    return MPICommunicator(cuda_aware=cuda_aware)

"""Communicators: one interface (`Communicator`) over a single process, MPI (mpi4py) and NCCL
(CuPy GPUs); the watchdog (watchdog.py) wraps one with the same interface.

Rank r's chunk of a vector of n values is `buf[slice(*chunk_bounds(n, size)[r])]`: chunks of
ceil(n / size) values, the last ones shorter or empty, so that NCCL (equal counts only) needs
at most one padding copy and MPI takes the counts as they are.

Arrays may be NumPy or CuPy. MPI moves CuPy arrays through pinned host buffers unless told
the MPI library is CUDA-aware; NCCL moves them on the GPU and uses MPI for everything else.
Sums (allreduce, reduce-scatter) also take float16 and bfloat16 arrays (gradient
compression): NCCL sums them natively; MPI has no such types, so they travel as 16-bit
words and a user-defined operation adds each pair in float32.
"""
import os
import shutil
import sys
import time
from typing import Protocol, runtime_checkable

import numpy

from .. import backend

OPS = ("sum", "max", "min")
ABORT_GRACE_S = 1.0


def chunk_bounds(n, size):
    """[(start, end)] of each rank's chunk of n values."""
    chunk = -(-n // size)
    return [(min(r * chunk, n), min((r + 1) * chunk, n)) for r in range(size)]


@runtime_checkable
class Handle(Protocol):
    """A pending non-blocking collective."""

    def wait(self):
        """Block until it completed (on a GPU: order later work after it)."""

    def test(self):
        """True once it completed; also drives MPI's progress."""


@runtime_checkable
class Communicator(Protocol):
    """What every communicator offers; the layers, GradSync, ZeRO-1 and the trainer use only
    this. Collectives must be called by every rank, in the same order. Array arguments are
    NumPy or CuPy vectors (`buf`), changed in place; `op` is "sum", "max" or "min"."""
    rank: int          # this process's rank in the job
    size: int          # the number of ranks
    local_rank: int    # this process's rank among the ranks of its node
    local_size: int    # the number of ranks on its node

    def allreduce(self, buf, op="sum"):
        """buf = the reduction of every rank's buf (blocking)."""

    def iallreduce(self, buf) -> Handle:
        """Start buf = the sum of every rank's buf; complete it with handle.wait()."""

    def reduce_scatter(self, buf, out):
        """out = the sum over ranks of this rank's chunk of buf (blocking)."""

    def ireduce_scatter(self, buf, out) -> Handle:
        """reduce_scatter, non-blocking."""

    def allgather(self, chunk, buf):
        """Every rank's chunk into its place in buf (blocking)."""

    def iallgather(self, chunk, buf) -> Handle:
        """allgather, non-blocking."""

    def bcast(self, buf, root=0):
        """buf = root's buf."""

    def allreduce_obj(self, value, op="sum"):
        """The reduction of a small Python value over all ranks."""

    def bcast_obj(self, value, root=0):
        """Root's small Python value, on every rank."""

    def allgather_obj(self, value):
        """[every rank's value], in rank order."""

    def barrier(self):
        """Return once every rank has arrived."""

    def node_shared(self, nbytes) -> "NodeShared | None":
        """`nbytes` of memory shared by the ranks of this node (collective), or None where
        the ranks cannot share memory."""

    def abort(self, code=1):
        """End the whole job with `code`, from any thread (never returns)."""


class NodeShared:
    """Memory shared by the ranks of one node: `array` (uint8), this rank's `rank` among the
    node's `size` ranks. Ranks write their parts, then call sync() (collective) before any
    reads another's part. Backed by an MPI-3 shared window, which the MPI library removes
    when the job ends, also when a rank is killed (its launcher cleans up)."""

    def __init__(self, array, rank=0, size=1, window=None, node=None):
        self.array, self.rank, self.size = array, rank, size
        self.window, self.node = window, node

    def sync(self):
        if self.window is not None:  # the unified memory model: sync, barrier, sync
            self.window.Sync()
            self.node.Barrier()
            self.window.Sync()


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

    def reduce_scatter(self, buf, out):
        out[...] = buf

    def ireduce_scatter(self, buf, out):
        self.reduce_scatter(buf, out)
        return Done()

    def allgather(self, chunk, buf):
        buf[...] = chunk

    def iallgather(self, chunk, buf):
        self.allgather(chunk, buf)
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

    def node_shared(self, nbytes):
        return NodeShared(numpy.empty(nbytes, numpy.uint8))

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # also from a background thread, which sys.exit would not end


class _MPIRequest:
    """A pending non-blocking collective; with host staging, wait() also copies the result
    back to the device. It holds the buffers it was given until it completes: MPI reads and
    writes them until then, and a caller's temporary (a compressed copy) would otherwise be
    freed and reused under it (seen with Open MPI)."""

    def __init__(self, request, holds, device_buf=None, host_buf=None):
        self.request, self.holds = request, holds
        self.device_buf, self.host_buf = device_buf, host_buf

    def test(self):
        return self.request.Test()  # also drives MPI's progress engine

    def wait(self):
        self.request.Wait()
        self.holds = ()
        if self.device_buf is not None:
            self.device_buf.set(self.host_buf)
            self.device_buf = None


def _prefer_the_ring():
    """Open MPI's non-blocking allreduce (libnbc) reduces to one rank and broadcasts back
    when the buffer is in place (GradSync's buckets), on fewer than 4 ranks, or below 64 KiB:
    each link carries data one way at a time. The ring moves the same bytes in half the time
    or less (8 MiB buckets on 2 ranks: 3.6 -> 9.4 GB/s in shared memory, bench/allreduce.py;
    1 Gbit/s TCP: 121 -> 66 ms a step, bench/network.py). Ask for it before MPI starts
    unless the user chose (OMPI_MCA_coll_libnbc_iallreduce_algorithm); other MPIs ignore
    the variable."""
    if "OMPI_COMM_WORLD_SIZE" in os.environ:  # started by Open MPI's launcher
        os.environ.setdefault("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1")


class MPICommunicator:
    """MPI through mpi4py. The local rank and size come from a shared-memory split of the
    communicator (the ranks on this node), not from launcher-specific variables."""

    def __init__(self, comm=None, cuda_aware=False):
        _prefer_the_ring()
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.cuda_aware = cuda_aware
        self._pinned = {}  # (slot, size, dtype) -> pinned host staging buffer
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._half_sums = {}  # dtype -> its MPI sum operation

    def _message(self, buf, counts=None):
        """`buf` (with per-rank `counts`) as MPI takes it: 16-bit floats, which MPI has no
        type for, as 16-bit words."""
        half = buf.dtype.itemsize == 2 and buf.dtype.kind in "fV"
        parts = [buf.view(numpy.uint16) if half else buf] + [counts] * (counts is not None) \
            + [self.MPI.UINT16_T] * half
        return parts if len(parts) > 1 else buf

    def _summed(self, buf):
        """(the MPI message of `buf`, the sum operation for its dtype)."""
        if buf.dtype.itemsize != 2 or buf.dtype.kind not in "fV":
            return buf, self.MPI.SUM
        if buf.dtype not in self._half_sums:
            dtype = buf.dtype

            def add(incoming, accumulated, datatype):  # in float32, rounded once
                a = numpy.frombuffer(incoming, dtype)
                b = numpy.frombuffer(accumulated, dtype)
                with numpy.errstate(over="ignore"):  # Inf: the overflow the step skips
                    b[...] = (a.astype(numpy.float32) + b.astype(numpy.float32)).astype(dtype)

            self._half_sums[dtype] = self.MPI.Op.Create(add, commute=True)
        return self._message(buf), self._half_sums[buf.dtype]

    def _staged(self, buf, copy=True, slot=""):
        """A pinned host copy of a CuPy array, or None where MPI takes `buf` itself: a host
        array, or a device array with CUDA-aware MPI, which reads device memory outside any
        stream: the work queued to write (or read) it must finish first. This is the one
        place where a device buffer meets MPI. Buffers in use at the same time take different
        `slot`s: a pending operation's include the device address, so that two in flight
        never share one."""
        if isinstance(buf, numpy.ndarray):
            return None
        if self.cuda_aware:
            backend.cupy.cuda.get_current_stream().synchronize()
            return None
        key = (slot, buf.size, buf.dtype.str)
        if key not in self._pinned:
            import cupyx
            self._pinned[key] = cupyx.empty_pinned(buf.size, dtype=buf.dtype)
        host = self._pinned[key].reshape(buf.shape)
        if copy:
            buf.get(out=host)
        return host

    def allreduce(self, buf, op="sum"):
        _check_op(op)
        host = self._staged(buf)
        target = buf if host is None else host
        message, mpi_op = self._summed(target) if op == "sum" else (target, self._ops[op])
        self.comm.Allreduce(self.MPI.IN_PLACE, message, op=mpi_op)
        if host is not None:
            buf.set(host)

    def iallreduce(self, buf):
        host = self._staged(buf, slot=_address(buf))
        message, op = self._summed(buf if host is None else host)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, message, op=op)
        return _MPIRequest(request, (buf,), None if host is None else buf, host)

    def _counts(self, n):
        return [end - start for start, end in chunk_bounds(n, self.size)]

    def _reduce_scatter(self, buf, out, pending):
        slot = _address(buf) if pending else ""
        host_in, host_out = self._staged(buf, slot=slot), \
            self._staged(out, copy=False, slot=(slot, "out"))
        send, op = self._summed(buf if host_in is None else host_in)
        receive, _ = self._summed(out if host_out is None else host_out)
        request = self.comm.Ireduce_scatter(send, receive, self._counts(buf.size), op=op)
        return _MPIRequest(request, (buf, out), None if host_out is None else out, host_out)

    def ireduce_scatter(self, buf, out):
        return self._reduce_scatter(buf, out, pending=True)

    def reduce_scatter(self, buf, out):
        self._reduce_scatter(buf, out, pending=False).wait()

    def _allgather(self, chunk, buf, pending):
        slot = _address(buf) if pending else ""
        host_in, host_out = self._staged(chunk, slot=(slot, "in")), \
            self._staged(buf, copy=False, slot=slot)
        counts = self._counts(buf.size)
        request = self.comm.Iallgatherv(
            self._message(chunk if host_in is None else host_in),
            self._message(buf if host_out is None else host_out, counts))
        return _MPIRequest(request, (chunk, buf), None if host_out is None else buf, host_out)

    def iallgather(self, chunk, buf):
        return self._allgather(chunk, buf, pending=True)

    def allgather(self, chunk, buf):
        self._allgather(chunk, buf, pending=False).wait()

    def bcast(self, buf, root=0):
        host = self._staged(buf)
        self.comm.Bcast(self._message(buf if host is None else host), root=root)
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

    def node_shared(self, nbytes):
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        # MPI maps the block from /dev/shm: one too small for it (a container's 64 MB)
        # would end in SIGBUS when the pages are touched, not in an error here
        room = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else nbytes
        if not node.bcast(room >= nbytes, root=0):
            node.Free()
            return None
        try:  # every rank of the node maps the block that node rank 0 allocates
            window = self.MPI.Win.Allocate_shared(nbytes if node.Get_rank() == 0 else 0, 1,
                                                  comm=node)
            memory, _ = window.Shared_query(0)
            window.Lock_all()  # a passive epoch for its lifetime: sync() needs one
        except self.MPI.Exception:
            node.Free()
            return None
        array = numpy.frombuffer(memory, numpy.uint8, count=nbytes)
        return NodeShared(array, node.Get_rank(), node.Get_size(), window, node)

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        # MPI_Abort takes every process down at once, and the launcher may drop output still
        # on its way (seen with MPICH's hydra): give the message a moment to get out first
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)


class _NCCLRequest:
    """A pending NCCL collective on the communication stream. It holds its buffers until
    wait() orders the compute stream after it: freed earlier, CuPy's pool could hand them to
    compute work while NCCL still uses them."""

    def __init__(self, event, holds):
        self.event, self.holds = event, holds

    def test(self):
        return self.event.done

    def wait(self):
        # later work on the compute stream waits for the collective; the host does not block
        backend.cupy.cuda.get_current_stream().wait_event(self.event)
        self.holds = ()


class NCCLCommunicator(MPICommunicator):
    """NCCL for CuPy arrays (allreduce, reduce-scatter, allgather, bcast); MPI for objects,
    host arrays, barrier and abort. One GPU per rank: NCCL refuses two ranks on one GPU.
    Every NCCL call runs on one communication stream, after the work queued on the caller's
    stream, in the order called: NCCL needs the same order on every rank, which calls on two
    streams (SyncBN's on the compute stream, the gradient buckets' beside it) would not
    keep. A blocking call makes the caller's stream wait for it; the host never waits. NCCL
    moves equal chunks only: a vector whose length the world size does not divide goes
    through a zero-padded copy (chunk_bounds puts the padding at the end). `on_queued`, if
    set (by a Watchdog), is called with the event that completes each queued collective."""

    def __init__(self, comm=None):
        super().__init__(comm)
        self.on_queued = None
        from cupy.cuda import nccl
        self.nccl = nccl
        uid = self.bcast_obj(nccl.get_unique_id() if self.rank == 0 else None)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = backend.cupy.cuda.Stream(non_blocking=True)
        self._types = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
                       numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64,
                       numpy.dtype(numpy.int64): nccl.NCCL_INT64,
                       numpy.dtype(numpy.float16): nccl.NCCL_FLOAT16}
        try:  # bfloat16 arrays exist with ml_dtypes (CuPy 14 computes in it)
            import ml_dtypes
            self._types[numpy.dtype(ml_dtypes.bfloat16)] = nccl.NCCL_BFLOAT16
        except (ImportError, AttributeError):
            pass
        self._nccl_ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def _is_device(self, buf):
        return not isinstance(buf, numpy.ndarray)

    def _enqueue(self, collective, *args):
        """Queue `collective(stream, *args)` on the communication stream after the work
        queued so far on the current stream; its handle."""
        self.stream.wait_event(backend.cupy.cuda.get_current_stream().record())
        collective(self.stream, *args)
        done = self.stream.record()
        if self.on_queued is not None:
            self.on_queued(done)
        return _NCCLRequest(done, args)

    def _allreduce_on(self, stream, buf, op):
        self.nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._types[buf.dtype],
                                 self._nccl_ops[op], stream.ptr)

    def _reduce_scatter_on(self, stream, buf, out):
        cupy = backend.cupy
        chunk = -(-buf.size // self.size)
        with stream:
            send = buf if buf.size == chunk * self.size else \
                cupy.concatenate([buf, cupy.zeros(chunk * self.size - buf.size, buf.dtype)])
            recv = out if out.size == chunk else cupy.empty(chunk, out.dtype)
            self.nccl_comm.reduceScatter(send.data.ptr, recv.data.ptr, chunk,
                                         self._types[buf.dtype], self.nccl.NCCL_SUM,
                                         stream.ptr)
            if recv is not out:
                out[...] = recv[:out.size]

    def _allgather_on(self, stream, chunk, buf):
        cupy = backend.cupy
        count = -(-buf.size // self.size)
        with stream:
            send = chunk if chunk.size == count else \
                cupy.concatenate([chunk, cupy.zeros(count - chunk.size, chunk.dtype)])
            recv = buf if buf.size == count * self.size else \
                cupy.empty(count * self.size, buf.dtype)
            self.nccl_comm.allGather(send.data.ptr, recv.data.ptr, count,
                                     self._types[buf.dtype], stream.ptr)
            if recv is not buf:
                buf[...] = recv[:buf.size]

    def _bcast_on(self, stream, buf, root):
        self.nccl_comm.bcast(buf.data.ptr, buf.size, self._types[buf.dtype], root, stream.ptr)

    def allreduce(self, buf, op="sum"):
        if not self._is_device(buf):
            return super().allreduce(buf, op)
        _check_op(op)
        self._enqueue(self._allreduce_on, buf, op).wait()

    def iallreduce(self, buf):
        if not self._is_device(buf):
            return super().iallreduce(buf)
        return self._enqueue(self._allreduce_on, buf, "sum")

    def reduce_scatter(self, buf, out):
        if not self._is_device(buf):
            return super().reduce_scatter(buf, out)
        self.ireduce_scatter(buf, out).wait()

    def ireduce_scatter(self, buf, out):
        if not self._is_device(buf):
            return super().ireduce_scatter(buf, out)
        return self._enqueue(self._reduce_scatter_on, buf, out)

    def allgather(self, chunk, buf):
        if not self._is_device(buf):
            return super().allgather(chunk, buf)
        self.iallgather(chunk, buf).wait()

    def iallgather(self, chunk, buf):
        if not self._is_device(buf):
            return super().iallgather(chunk, buf)
        return self._enqueue(self._allgather_on, chunk, buf)

    def bcast(self, buf, root=0):
        if not self._is_device(buf):
            return super().bcast(buf, root)
        self._enqueue(self._bcast_on, buf, root).wait()

    def abort(self, code=1):
        """Abort NCCL's communicator first (a collective hung on the GPU then returns, as
        NCCL's docs advise), then the job."""
        self.nccl_comm.abort()
        super().abort(code)


def _address(buf):
    """The device address of a CuPy array (None for host arrays)."""
    return None if isinstance(buf, numpy.ndarray) else buf.data.ptr


def _check_op(op):
    if op not in OPS:
        raise ValueError(f"reduction op must be one of {OPS}, got {op!r}")


def mpi_cuda_support():
    """What the MPI library of this process says of CUDA device buffers: True or False
    (MPIX_Query_cuda_support, which Open MPI and MPICH export), or None when it cannot say.
    Call it after MPI has started (a communicator exists)."""
    import ctypes
    try:
        with open("/proc/self/maps") as maps:  # the libmpi that mpi4py loaded
            libraries = {line.split()[-1] for line in maps if "/libmpi" in line}
    except OSError:  # not Linux
        return None
    for path in sorted(libraries):
        try:
            query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if query is not None:
            return bool(query())
    return None


KINDS = ("auto", "local", "mpi", "nccl")


def communicator(kind="auto"):
    """The communicator of this process. "auto": MPI when launched with more than one rank
    (mpi4py importable), else the single-process one; "nccl" needs CuPy and a GPU per rank.
    Device buffers go through pinned host copies unless `cuda_aware` is set (process.setup
    decides it)."""
    if kind not in KINDS:
        raise ValueError(f"communicator must be one of {KINDS}, got {kind!r}")
    if kind == "local":
        return LocalCommunicator()
    if kind == "auto":
        try:
            comm = MPICommunicator()
        except (ImportError, RuntimeError):  # no mpi4py, or no MPI library for it to load
            return LocalCommunicator()
        return comm if comm.size > 1 else LocalCommunicator()
    if kind == "nccl":
        return NCCLCommunicator()
    return MPICommunicator()

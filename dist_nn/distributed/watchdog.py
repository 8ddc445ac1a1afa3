"""A watchdog for collectives: a rank that waits in one longer than a timeout finds out which
ranks never arrived, says so, and aborts the job instead of hanging it.

`Watchdog(comm, timeout)` wraps a communicator (same interface). Every collective the main
thread starts gets the next sequence number, equal on all ranks that run in step, and the
time spent waiting in it is tracked. A background thread per rank, on its own duplicate of
the MPI communicator (MPI_THREAD_MULTIPLE), answers the others' questions "which collective
are you at?" and, once its own main thread has waited past the timeout, asks every rank:
those whose sequence number is behind (or that do not answer) did not arrive.

The same thread watches the processes of the other ranks on its node: one that has ended
while the main thread waits in a collective (killed, or gone through os._exit or a crash that
ran no exit code) can never arrive, and the job is aborted at once, naming it.

NCCL's collectives do not block the host: they are queued on the GPU, and a hung one shows
only as a later host sync that never returns. Through the communicator's `on_queued` hook
the watchdog keeps each one's completion event, in queue order (one stream), and polls the
oldest: one not done within the timeout is reported as above, then NCCL's communicator and
the job are aborted.
"""
import atexit
import collections
import os
import sys
import threading
import time

import numpy

from .. import signals

ASK, ANSWER = 101, 102  # message tags on the watchdog's own communicator
POLL_S = 0.1


class _Waiting:
    """A handle whose wait() counts as waiting in its collective."""

    def __init__(self, handle, watchdog, sequence, name):
        self.handle, self.watchdog, self.sequence, self.name = handle, watchdog, sequence, name

    def test(self):
        return self.handle.test()

    def wait(self):
        with self.watchdog._waiting(self.sequence, self.name):
            self.handle.wait()


class Watchdog:
    def __init__(self, comm, timeout):
        self.comm, self.timeout = comm, timeout
        self.rank, self.size = comm.rank, comm.size
        self.local_rank, self.local_size = comm.local_rank, comm.local_size
        self.MPI = comm.MPI
        self.sequence = 0          # collectives started by the main thread
        self.waiting = None        # (sequence, name, since) while the main thread waits
        self.name = None           # the collective being started
        self.on_device = collections.deque()  # (sequence, name, since, event) on the GPU
        if hasattr(comm, "on_queued"):
            comm.on_queued = self._queued
        self.control = comm.comm.Dup()
        self.peers = self._node_peers()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self.thread.start()
        atexit.register(self.close)  # runs before mpi4py finalizes MPI (registered earlier)

    def close(self):
        """Stop the watching thread: no MPI call may race MPI_Finalize."""
        if self.thread.is_alive():
            self.stopping.set()
            self.thread.join()

    def _node_peers(self):
        """{rank: (pid, start time)} of the other ranks on this node."""
        node = self.comm.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        mine = (self.rank, os.getpid(), _started(os.getpid()))
        peers = {rank: (pid, started) for rank, pid, started in node.allgather(mine)
                 if rank != self.rank and started is not None}
        node.Free()
        return peers

    # --- the communicator interface, each collective counted and timed ---------------------
    def _collective(self, name, call, *args, **kwargs):
        self.sequence, self.name = self.sequence + 1, name
        with self._waiting(self.sequence, name):
            return call(*args, **kwargs)

    def _started(self, name, call, *args):
        self.sequence, self.name = self.sequence + 1, name
        return _Waiting(call(*args), self, self.sequence, name)

    def _queued(self, event):
        """The collective being started was queued on the GPU; `event` completes with it."""
        self.on_device.append((self.sequence, self.name, time.monotonic(), event))

    def allreduce(self, buf, op="sum"):
        return self._collective("allreduce", self.comm.allreduce, buf, op)

    def iallreduce(self, buf):
        return self._started("iallreduce", self.comm.iallreduce, buf)

    def reduce_scatter(self, buf, out):
        return self._collective("reduce_scatter", self.comm.reduce_scatter, buf, out)

    def ireduce_scatter(self, buf, out):
        return self._started("ireduce_scatter", self.comm.ireduce_scatter, buf, out)

    def allgather(self, chunk, buf):
        return self._collective("allgather", self.comm.allgather, chunk, buf)

    def iallgather(self, chunk, buf):
        return self._started("iallgather", self.comm.iallgather, chunk, buf)

    def bcast(self, buf, root=0):
        return self._collective("bcast", self.comm.bcast, buf, root)

    def allreduce_obj(self, value, op="sum"):
        return self._collective("allreduce", self.comm.allreduce_obj, value, op)

    def bcast_obj(self, value, root=0):
        return self._collective("bcast", self.comm.bcast_obj, value, root)

    def allgather_obj(self, value):
        return self._collective("allgather", self.comm.allgather_obj, value)

    def barrier(self):
        return self._collective("barrier", self.comm.barrier)

    def node_shared(self, nbytes):
        return self._collective("node_shared", self.comm.node_shared, nbytes)

    def abort(self, code=1):
        self.comm.abort(code)

    # --- waiting and watching ------------------------------------------------------------------
    class _Wait:
        def __init__(self, watchdog, sequence, name):
            self.watchdog, self.entry = watchdog, (sequence, name, time.monotonic())

        def __enter__(self):
            self.watchdog.waiting = self.entry

        def __exit__(self, *exc):
            self.watchdog.waiting = None

    def _waiting(self, sequence, name):
        return Watchdog._Wait(self, sequence, name)

    def _answer_questions(self):
        """Tell every rank that asked which collective this rank's main thread is at."""
        while self.control.Iprobe(source=self.MPI.ANY_SOURCE, tag=ASK):
            asker = numpy.empty(1, dtype=numpy.int64)
            status = self.MPI.Status()
            self.control.Recv(asker, source=self.MPI.ANY_SOURCE, tag=ASK, status=status)
            waiting = self.waiting
            reply = numpy.array([self.sequence, waiting is not None], dtype=numpy.int64)
            self.control.Send(reply, dest=status.Get_source(), tag=ANSWER)

    def _watch(self):
        signals.block_in_this_thread()
        while not self.stopping.is_set():
            self._answer_questions()
            waiting = self.waiting
            if waiting is not None:
                ended = {r: pid for r, (pid, started) in self.peers.items()
                         if _started(pid) != started}
                if ended:
                    self._abort_for_ended(ended, *waiting)
                if time.monotonic() - waiting[2] > self.timeout:
                    self._report_and_abort(*waiting)
            self._check_on_device()
            time.sleep(POLL_S)

    def _check_on_device(self):
        """Forget the GPU's completed collectives (in order: one stream); report the oldest
        one still running past the timeout."""
        while self.on_device:
            sequence, name, since, event = self.on_device[0]
            if event.done:
                self.on_device.popleft()
            elif time.monotonic() - since > self.timeout:
                self._report_and_abort(sequence, f"{name}, queued on the GPU", since,
                                       stuck="NCCL")
            else:
                return

    def _abort_for_ended(self, ended, sequence, name, _since):
        sys.stderr.write(
            f"[rank {self.rank}/{self.size}] ranks {sorted(ended)} on this node have ended "
            f"(pids {[ended[r] for r in sorted(ended)]}) while collective #{sequence} ({name}) waits for "
            "them; aborting the job\n")
        sys.stderr.flush()
        self.comm.abort(1)

    def _report_and_abort(self, sequence, name, _since, stuck="the MPI library"):
        """Ask every rank where it is; name those behind; abort the job."""
        others = [r for r in range(self.size) if r != self.rank]
        for r in others:
            self.control.Send(numpy.array([self.rank], dtype=numpy.int64), dest=r, tag=ASK)
        replies, deadline = {}, time.monotonic() + max(5.0, 10 * POLL_S)
        pending = {r: numpy.empty(2, dtype=numpy.int64) for r in others}
        requests = {r: self.control.Irecv(pending[r], source=r, tag=ANSWER) for r in others}
        while requests and time.monotonic() < deadline:
            self._answer_questions()  # others may be asking us at the same time
            for r in [r for r, request in requests.items() if request.Test()]:
                replies[r] = int(pending[r][0])
                del requests[r]
            time.sleep(POLL_S)
        behind = sorted(r for r, seen in replies.items() if seen < sequence)
        silent = sorted(requests)
        parts = [f"ranks {behind} did not arrive"] if behind else []
        if silent:
            parts.append(f"ranks {silent} do not answer (hung or dead)")
        sys.stderr.write(
            f"[rank {self.rank}/{self.size}] watchdog: collective #{sequence} ({name}) has not "
            f"completed within {self.timeout:g} s: "
            f"{'; '.join(parts) or f'every rank arrived ({stuck} seems stuck)'}; "
            "aborting the job\n")
        sys.stderr.flush()
        self.comm.abort(1)


def _started(pid):
    """When process `pid` started (clock ticks since boot), or None when it has ended (or is
    a zombie) or this is not Linux: a pid reused by another process differs in it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else int(fields[19])  # state; field 22: starttime

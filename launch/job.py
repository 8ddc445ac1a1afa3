"""A launched job, supervised to its end: a stop signal to the launcher reaches every rank
(which checkpoints and stops), the launcher waits for the ranks, and the MPI shared-memory
files that an aborted job leaves in /dev/shm are removed (the job's own, nobody else's).

A stop signal is never fatal to a rank: one that comes before the job started ends the
launcher at once (nothing to lose), and one that comes while the ranks start waits until
every rank catches SIGUSR1 (dist_nn.signals' handlers are in place; at most READY_WAIT_S)."""
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# what mpiexec gets when the launcher gets a signal: MPICH's and Open MPI's both pass SIGUSR1
# on to every rank (for SIGTERM they would kill the ranks instead); MPICH's passes SIGINT on,
# Open MPI's cannot (it turns it into SIGTERM, then SIGKILL 1 s later): it gets SIGUSR2, which
# the ranks take as Ctrl-C (dist_nn.signals)
FORWARD = {signal.SIGTERM: signal.SIGUSR1, signal.SIGHUP: signal.SIGUSR1,
           signal.SIGINT: signal.SIGINT}
OPEN_MPI_INTERRUPT = signal.SIGUSR2
EXIT_PREEMPTED, EXIT_INTERRUPTED = 75, 130  # as dist_nn.signals'
PR_SET_PDEATHSIG = 1
POLL_S = 1.0
READY_WAIT_S = 60.0  # a command that never catches SIGUSR1 gets its signal after this
PROC, SHM = Path("/proc"), "/dev/shm/"
# the segments of MPICH, UCX, OpenMPI (vader, sm) and PSM2: a file of another kind that the
# job maps (a data set a user put in /dev/shm) is never removed
MPI_SEGMENTS = ("mpich_shm_", "ucx_shm_posix_", "vader_segment.", "sm_segment.", "psm2_shm.")
received_early = []  # stop signals that came during the launcher's own start-up


def note_stop_signals():
    """Keep the stop signals that come while the launcher starts (its imports), for
    supervise(): call it first of all."""
    for number in FORWARD:
        signal.signal(number, lambda number, _frame: received_early.append(number))


def supervise(argv, env=None, open_mpi=False, ranks=1):
    """Run `argv` (an mpiexec command line starting `ranks` ranks; `open_mpi`: Open MPI's) to
    its end and return its exit status. A stop signal before the job started returns 75 (or
    130 for Ctrl-C) without starting it; a second Ctrl-C kills every process of the job at
    once, without a checkpoint, and returns 130."""
    return _Supervisor(argv, env, open_mpi, ranks).run()


class _Supervisor:
    def __init__(self, argv, env, open_mpi, ranks):
        self.argv, self.env, self.open_mpi, self.ranks = argv, env, open_mpi, ranks
        self.job, self.pending, self.forwarded, self.since = None, [], [], None
        self.killed = False

    def run(self):
        previous = {number: signal.signal(number, self.on_signal) for number in FORWARD}
        shared = set()
        try:
            if received_early or self.pending:
                number = (received_early + self.pending)[0]
                code = EXIT_INTERRUPTED if number == signal.SIGINT else EXIT_PREEMPTED
                print(f"launcher: {signal.Signals(number).name} before the job started: "
                      f"nothing to lose; exiting with {code}", file=sys.stderr, flush=True)
                return code
            self.job = subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                        preexec_fn=_stop_with_launcher)  # Ctrl-C comes here
            while True:
                self.pass_on_pending()
                shared |= shared_memory(self.job.pid)
                try:
                    code = self.job.wait(timeout=0.05 if self.pending else POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
        except Interrupted:
            if self.job is not None:
                self.job.wait()
            code = -signal.SIGINT
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        left = [path for path in shared if path.exists()]
        for path in left:
            path.unlink(missing_ok=True)
        if left:
            print(f"launcher: removed {len(left)} shared-memory files the job left in {SHM}",
                  file=sys.stderr)
        return code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it

    def on_signal(self, number, _frame):
        if number == signal.SIGINT and number in self.pending + self.forwarded:
            if not self.killed:  # a third press changes nothing
                self.kill()
            return
        self.pending.append(number)
        if self.job is not None:
            self.pass_on_pending()

    def pass_on_pending(self):
        """Pass the pending signals on once every rank handles them (or it waited too long):
        one that reached a rank still starting would kill it."""
        if not self.pending:
            return
        ready = ranks_ready(self.job.pid, self.ranks)
        if self.since is None:
            self.since = time.monotonic()
            if not ready:
                print(f"launcher: {signal.Signals(self.pending[0]).name}: the ranks are still "
                      f"starting; passing it on once they handle it (at most "
                      f"{READY_WAIT_S:.0f} s; Ctrl-C again: stop now)", file=sys.stderr,
                      flush=True)
        if ready or time.monotonic() - self.since > READY_WAIT_S:
            while self.pending:
                number = self.pending.pop(0)
                sent = OPEN_MPI_INTERRUPT if number == signal.SIGINT and self.open_mpi \
                    else FORWARD[number]
                again = " (Ctrl-C again: stop now, without one)" \
                    if number == signal.SIGINT else ""
                print(f"launcher: {signal.Signals(number).name}: sent {sent.name} to every "
                      f"rank; waiting for them to checkpoint and stop{again}",
                      file=sys.stderr, flush=True)
                self.job.send_signal(sent)
                self.forwarded.append(number)
            self.since = None

    def kill(self):
        self.killed = True
        if self.job is not None:
            for pid in reversed(descendants(self.job.pid)):  # the ranks first, then mpiexec
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        print("launcher: SIGINT again: killed the job without a checkpoint", file=sys.stderr,
              flush=True)
        raise Interrupted


def ranks_ready(pid, ranks):
    """Whether the job rooted at pid has `ranks` processes at its leaves (the ranks, below
    mpiexec and its proxies) and each catches SIGUSR1: their stop handlers are in place."""
    tree = process_tree()
    leaves = [p for p in descendants(pid, tree) if p != pid and not tree.get(p)]
    return len(leaves) >= ranks and all(_catches(p, signal.SIGUSR1) for p in leaves)


def _catches(pid, number):
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (number - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


class Interrupted(Exception):
    """Ctrl-C twice: the job was killed."""


def _stop_with_launcher():
    """In mpiexec, before it starts: should the launcher die (kill -9), mpiexec gets SIGUSR1,
    which its ranks take as preemption, so the job never runs on orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGUSR1))
    except (OSError, AttributeError):  # not Linux
        pass


def process_tree():
    """{parent pid: [child pids]} of every process (from /proc)."""
    children = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def descendants(pid, tree=None):
    """pid and every process below it (empty where there is none)."""
    children = process_tree() if tree is None else tree
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], ()))
    return found


def shared_memory(pid):
    """The MPI segments in /dev/shm that the processes of the job rooted at pid have mapped."""
    paths = set()
    for process in descendants(pid):
        try:
            maps = (PROC / str(process) / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            where = line.find(SHM)
            if where >= 0 and line[where + len(SHM):].startswith(MPI_SEGMENTS) \
                    and not line.endswith(" (deleted)"):
                paths.add(Path(line[where:]))
    return paths

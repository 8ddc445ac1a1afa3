"""A launched job, supervised to its end: a stop signal to the launcher reaches every rank
(which checkpoints and stops), the launcher waits for the ranks, and the MPI shared-memory
files that an aborted job leaves in /dev/shm are removed (the job's own, nobody else's)."""
import ctypes
import signal
import subprocess
import sys
from pathlib import Path

# what mpiexec gets when the launcher gets a signal: MPICH's and OpenMPI's both pass SIGUSR1 on
# to every rank (for SIGTERM they would kill the ranks instead); MPICH's passes SIGINT on
FORWARD = {signal.SIGTERM: signal.SIGUSR1, signal.SIGHUP: signal.SIGUSR1,
           signal.SIGINT: signal.SIGINT}
PR_SET_PDEATHSIG = 1
POLL_S = 1.0
PROC, SHM = Path("/proc"), "/dev/shm/"
# the segments of MPICH, UCX, OpenMPI (vader, sm) and PSM2: a file of another kind that the
# job maps (a data set a user put in /dev/shm) is never removed
MPI_SEGMENTS = ("mpich_shm_", "ucx_shm_posix_", "vader_segment.", "sm_segment.", "psm2_shm.")


def supervise(argv, env=None):
    """Run `argv` (an mpiexec command line) to its end and return its exit status."""
    job = subprocess.Popen(argv, env=env, preexec_fn=_stop_with_launcher,
                           start_new_session=True)  # a terminal's Ctrl-C: forwarded once, here

    def forward(number, _frame):
        sent = FORWARD[number]
        print(f"launcher: {signal.Signals(number).name}: sent {sent.name} to every rank; "
              "waiting for them to checkpoint and stop", file=sys.stderr, flush=True)
        job.send_signal(sent)

    previous = {number: signal.signal(number, forward) for number in FORWARD}
    shared = set()
    try:
        while True:
            shared |= shared_memory(job.pid)
            try:
                code = job.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
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


def _stop_with_launcher():
    """In mpiexec, before it starts: should the launcher die (kill -9), mpiexec gets SIGUSR1,
    which its ranks take as preemption, so the job never runs on orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGUSR1))
    except (OSError, AttributeError):  # not Linux
        pass


def descendants(pid):
    """pid and every process below it (from /proc; empty where there is none)."""
    children = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
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

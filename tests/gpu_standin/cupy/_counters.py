"""What the stand-in has counted: device operations (kernel launches), host syncs, uploads,
random generators created (and those slow to set up) and pinned host allocations, each with the call sites that caused
them. The rules for what counts live elsewhere (_costs.py: kernels; cuda/_context.py: syncs
and uploads); this module only keeps the tally."""
import collections
import contextlib
import dataclasses
import os
import sys
import threading

import numpy

KINDS = ("ops", "syncs", "uploads", "generators_created", "slow_generator_setups",
         "pinned_allocations")


@dataclasses.dataclass(eq=False)  # blocks are told apart by identity
class Counts:
    """Totals by kind, and by_site[kind]: a Counter of "file:line" of the calls that caused
    them (with tracing on)."""
    ops: int = 0
    syncs: int = 0
    uploads: int = 0
    generators_created: int = 0
    slow_generator_setups: int = 0  # XORWOW's and MRG32k3a's (cupy/random)
    pinned_allocations: int = 0
    by_site: dict = dataclasses.field(
        default_factory=lambda: {kind: collections.Counter() for kind in KINDS})

    def copy(self):
        return dataclasses.replace(self, by_site={k: c.copy() for k, c in self.by_site.items()})


_total = Counts()
_active = [_total]  # the process total and every open counting() block
_lock = threading.Lock()
_tracing = True

# A call's site is the first frame outside these: the stand-in, NumPy and the backend module,
# which only forwards to the array module.
_SKIPPED_DIRS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
                 os.path.dirname(os.path.abspath(numpy.__file__)) + os.sep)
_SKIPPED_FILE = os.path.join("dist_nn", "backend.py")
_skip_cache = {}


def _skipped(filename):
    skipped = _skip_cache.get(filename)
    if skipped is None:
        path = os.path.abspath(filename)
        skipped = path.startswith(_SKIPPED_DIRS) or path.endswith(_SKIPPED_FILE)
        _skip_cache[filename] = skipped
    return skipped


def _site():
    frame = sys._getframe(1)
    while frame is not None and _skipped(frame.f_code.co_filename):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def record(kind, n=1):
    """Count n of `kind` in the total and in every open counting() block."""
    site = _site() if _tracing else None
    with _lock:
        for counts in _active:
            setattr(counts, kind, getattr(counts, kind) + n)
            if site is not None:
                counts.by_site[kind][site] += n


def counts():
    """A snapshot of the totals since the start (or the last reset())."""
    with _lock:
        return _total.copy()


def reset():
    """Start the totals again from zero."""
    with _lock:
        fresh = Counts()
        for field in dataclasses.fields(Counts):
            setattr(_total, field.name, getattr(fresh, field.name))


@contextlib.contextmanager
def counting():
    """A with-block yielding the Counts of what runs inside it (live, nested blocks too)."""
    block = Counts()
    with _lock:
        _active.append(block)
    try:
        yield block
    finally:
        with _lock:
            _active.remove(block)


def tracing(on):
    """Collect call sites (on by default: a short walk up the stack per count); returns the
    previous setting."""
    global _tracing
    previous, _tracing = _tracing, bool(on)
    return previous

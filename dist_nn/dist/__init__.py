"""The data-parallel runtime: communicators, gradient sync, start-up checks, metrics, and the
per-process set-up that keeps a failing or vanishing rank from hanging the job.

Names load on first use: `dist.signals` must be importable (to catch stop signals) at the very
start of a run, before NumPy and MPI."""
import importlib

_HOMES = {
    "comm": ("KINDS", "LocalCommunicator", "MPICommunicator", "NCCLCommunicator",
             "chunk_bounds", "communicator"),
    "grad_sync": ("GradSync",),
    "metrics": ("Totals",),
    "process": ("LaunchError", "abort_on_failure", "finished", "limit_threads", "placement",
                "setup"),
    "signals": ("PreemptionSignal",),
    "startup": ("broadcast_state", "check_same_everywhere", "fingerprint", "raise_together"),
    "watchdog": ("Watchdog",),
    "zero": ("ShardedGradSync", "ShardedOptimizer", "sharded"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)

"""The data-parallel runtime: communicators, gradient sync (plain and ZeRO-1), start-up
checks, exact metric totals, and the per-process set-up that keeps a failing or vanishing
rank from hanging the job (docs/design.md §3.3)."""
from . import compression
from .comm import (KINDS, Communicator, LocalCommunicator, MPICommunicator, NCCLCommunicator,
                   chunk_bounds, communicator)
from .grad_sync import GradSync
from .process import (LaunchError, StartupDeadline, abort_on_failure, allow_exit,
                      limit_threads, placement, setup)
from .startup import (ReplicasDiffer, broadcast_state, check_same_computation,
                      check_same_everywhere, fingerprint, raise_together)
from .totals import Totals
from .watchdog import Watchdog
from .zero import ShardedGradSync, ShardedOptimizer, sharded

__all__ = ["KINDS", "Communicator", "GradSync", "LaunchError", "LocalCommunicator",
           "MPICommunicator", "NCCLCommunicator", "ReplicasDiffer", "ShardedGradSync",
           "StartupDeadline", "ShardedOptimizer",
           "Totals", "Watchdog", "abort_on_failure", "allow_exit", "broadcast_state",
           "check_same_computation", "check_same_everywhere", "chunk_bounds", "communicator",
           "compression", "fingerprint",
           "limit_threads", "placement", "raise_together", "setup", "sharded"]

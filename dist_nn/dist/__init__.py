"""The data-parallel runtime: communicators, gradient sync, start-up checks, metrics, and the
per-process set-up that keeps a failing rank from hanging the job."""
from .comm import KINDS, LocalCommunicator, MPICommunicator, NCCLCommunicator, communicator
from .grad_sync import GradSync
from .metrics import Totals
from .process import (LaunchError, PreemptionSignal, abort_on_failure, limit_threads,
                      placement, setup)
from .watchdog import Watchdog
from .startup import broadcast_state, check_same_everywhere, fingerprint, raise_together

__all__ = ["KINDS", "GradSync", "LaunchError", "LocalCommunicator", "MPICommunicator",
           "NCCLCommunicator", "PreemptionSignal", "Totals", "Watchdog", "abort_on_failure", "broadcast_state", "check_same_everywhere",
           "communicator", "fingerprint", "limit_threads", "placement", "raise_together", "setup"]

"""Monitoring of a training run on rank 0: the metrics log, the progress display, the plots."""
from .metrics import MetricsLog, read_records
from .plots import plot_run
from .progress import Progress, plural

__all__ = ["MetricsLog", "read_records", "Progress", "plot_run", "plural"]

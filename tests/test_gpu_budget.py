"""The GPU path's budgets for one resnet20 training step at batch 32, counted on the CuPy
stand-in by bench/gpu_budget.py (deterministic counts, not timings): at most 600 device
operations (≈ kernel launches) and 2 host syncs, on one rank and on two ranks through the NCCL
path with SyncBN (before issue 19: 2,056 operations and 5 syncs, 24 with SyncBN)."""
import json
import subprocess
import sys
from pathlib import Path

from tests.distributed.mpi import needs_mpi

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS, SYNCS = 600, 2


@needs_mpi
def test_a_resnet20_step_stays_within_the_launch_and_sync_budgets():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_budget.py"), "--models",
                           "resnet20", "--json"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(rows) == {"resnet20", "resnet20+syncbn"}
    for row, (operations, syncs) in rows.items():
        assert operations <= OPERATIONS, f"{row}: {operations} device operations a step"
        assert syncs <= SYNCS, f"{row}: {syncs} host syncs a step"
    # SyncBN adds its collectives, one each way per layer (19), and nothing else
    assert rows["resnet20+syncbn"][0] - rows["resnet20"][0] <= 2 * 19 + 2

#!/usr/bin/env bash
# Every GPU check in one call (for a machine with CuPy, PyTorch with CUDA and a GPU):
# the CuPy tests against NumPy and PyTorch, then the core and mixed-precision benchmarks.
#   bash bench/gpu_checks.sh [OUTPUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
status=0
python -m pytest tests/test_gpu.py -q -rs 2>&1 | tee "$out/gpu_tests.log" || status=1
python bench/core_vs_torch.py --device gpu --rounds 3 2>&1 | tee "$out/gpu_core_vs_torch.log" || status=1
# mixed precision against float32 (and, with CUPY_TF32=1 / PyTorch's allow_tf32, TF32)
python bench/amp_step.py --device gpu 2>&1 | tee "$out/gpu_amp_step.log" || status=1
CUPY_TF32=1 python bench/amp_step.py --device gpu --tf32 2>&1 | tee "$out/gpu_amp_step_tf32.log" || status=1
exit $status

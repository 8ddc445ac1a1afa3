#!/usr/bin/env bash
# Every GPU check in one call, on a fresh machine with one or more NVIDIA GPUs, CuPy (the
# `gpu` extra), mpi4py, h5py and PyTorch with CUDA; ends within 8 minutes, each step under
# `timeout`, each step's log kept in OUTPUT_DIR (default: $OUT, else .), a summary last.
#   bash bench/gpu_checks.sh [OUTPUT_DIR]
# Steps: the environment (nvidia-smi, CuPy's configuration, NCCL); a Trainer smoke on the
# embedded digits (float32, fp16, bf16, ZeRO-1); the GPU tests (tests/test_gpu.py: every layer
# case, models and the Trainer against NumPy and PyTorch CUDA); a 1-rank NCCL collective; 2
# ranks of host-staged MPI on one GPU; resnet20 and mixed precision against PyTorch CUDA
# (steps/s and their ratio). The MPI step needs an mpiexec beside python or on PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath "${1:-${OUT:-.}}")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DIST_NN_HOST_TUNING=0
summary=()

step() {  # step NAME SECONDS COMMAND...: under timeout (functions too), log in $out/NAME.log
    local name=$1 seconds=$2 start=$SECONDS
    shift 2
    echo "=== $name (at most ${seconds} s): $*"
    timeout -k 10 "$seconds" bash -c '"$@"' "$name" "$@" >"$out/$name.log" 2>&1
    local status=$?
    tail -n 15 "$out/$name.log"
    summary+=("$(printf '%-14s exit %3d  %4d s' "$name" "$status" $((SECONDS - start)))")
}

train() {  # one short Trainer run on the embedded digits, exit 0 and the final checkpoint
    local run="$work/$1"
    shift
    python -m dist_nn.train train.device=gpu train.max_steps=40 log.tensorboard=off \
        "log.run_dir=$run" "$@" && ls "$run"/checkpoints/step-*40.h5
}

smoke() {
    train plain model.name=cnn && train fp16 model.name=cnn train.amp=fp16 &&
        train bf16 model.name=resnet20 train.amp=bf16 && train zero model.name=cnn optim.shard=true
}

nccl() {
    python - <<'EOF'
import cupy
from dist_nn.distributed import process
from dist_nn.distributed.comm import NCCLCommunicator
process.setup("mpi", "gpu")
comm = NCCLCommunicator()
x = cupy.arange(1001, dtype=cupy.float32)  # 1001: the padded path of an uneven split
comm.allreduce(x)
assert float(x.sum()) == 1000 * 1001 / 2, float(x.sum())
print("NCCL allreduce on 1 rank: ok")
EOF
}

two_ranks() {  # both ranks on GPU 0 (local rank modulo the GPUs), MPI through host copies
    python -m launch.mpirun -n 2 python -m dist_nn.train train.device=gpu train.comm=mpi \
        train.cuda_aware=off model.name=cnn train.max_steps=20 log.tensorboard=off \
        "log.run_dir=$work/two" && ls "$work"/two/checkpoints/step-*20.h5
}

export work
export -f train smoke nccl two_ranks
step environment 20 bash -c 'nvidia-smi && python -c "import cupy; cupy.show_config()
from cupy.cuda import nccl
print(\"NCCL:\", nccl.get_version() if nccl.available else \"not available\")
import torch; print(\"torch\", torch.__version__, \"CUDA:\", torch.cuda.is_available())"'
step smoke 90 smoke
step gpu_tests 180 python -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py \
    tests/nn/test_batchnorm.py
step nccl 30 nccl
step two_ranks 50 two_ranks
step vs_torch 60 python bench/core_vs_torch.py --device gpu --models resnet20 --rounds 2 \
    --seconds 1
step amp 40 python bench/amp_step.py --device gpu --models resnet20 --rounds 1 --seconds 1

printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
! grep -qv ' exit   0 ' "$out/summary.txt"

"""Gradient compression on 2 and 4 ranks against references written here: fp16/bf16 equal
one process summing the same cast gradients; PowerSGD equals the paper's algorithm (Vogels
et al. 2019, Algorithm 1 with error feedback and warm start; Gram-Schmidt, not QR), replayed
step by step on the local gradients every rank recorded."""
import ast
import os

import numpy as np
import pytest

from dist_nn import backend
from tests.distributed import mpi

pytestmark = [pytest.mark.slow, mpi.needs_mpi]
RANK = 2  # the program's PowerSGD rank
# through MPI on the CPU, and through NCCL on GPUs (or the CuPy stand-in's, over MPI)
TRANSPORTS = ["mpi", pytest.param("nccl", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not backend.gpu_available(), reason="needs CuPy and GPUs (or DIST_NN_CUPY_STANDIN=1)")])]


def run(tmp_path, ranks, name, *flags, transport="mpi"):
    nccl = ("--nccl",) if transport == "nccl" else ()
    out = tmp_path / f"{name}-{ranks}{''.join(flags + nccl)}.npz"
    done = mpi.launch(ranks, "compression", out, name, *flags, *nccl,
                      env={"DIST_NN_STANDIN_GPUS": str(ranks)})
    assert done.returncode == 0, done.stderr
    return np.load(out)


def half_type(name):
    """numpy's float16, or ml_dtypes' bfloat16 (skipped where it is not installed)."""
    return np.float16 if name == "fp16" else pytest.importorskip("ml_dtypes").bfloat16


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_a_cast_compression_equals_one_process_summing_the_cast_gradients(tmp_path, name,
                                                                          transport):
    if name == "bf16" and transport == "nccl" and os.environ.get("DIST_NN_CUPY_STANDIN"):
        pytest.skip("the stand-in's NCCL has no bfloat16 (real NCCL sums it natively)")
    half = half_type(name)
    result = run(tmp_path, 2, name, transport=transport)
    scale = per_value_scales(result, name)
    a, b = ((result["local"][r] * scale).astype(half).astype(np.float32) for r in range(2))
    expected = (a + b).astype(half).astype(np.float64) / scale  # 2 ranks: 1 float32 addition
    np.testing.assert_array_equal(result["synced0"], expected)
    np.testing.assert_array_equal(result["synced1"], expected)
    if name == "fp16":  # scaled up: the largest of a bucket near 2^12, after the first step
        largest = [np.abs(expected[1:, start:end] * scale[1:, start:end]).max(axis=1)
                   for start, end in result["buckets"]]
        assert 2**10 < np.min(largest) and np.max(largest) < 2**14
    exact = result["local"].sum(axis=0)
    assert not np.array_equal(result["synced0"], exact)  # it was compressed
    tolerance = {"fp16": 2e-3, "bf16": 1.6e-2}[name]
    np.testing.assert_allclose(result["synced0"], exact, rtol=tolerance,
                               atol=tolerance * np.abs(exact).max())


def per_value_scales(result, name):
    """(steps, values): fp16's scale of each value's bucket at each step (1 for bf16)."""
    steps, values = result["local"].shape[1:]
    if name != "fp16":
        return np.ones((steps, values))
    return np.concatenate([np.repeat(result["scales"][:, [b]], end - start, axis=1)
                           for b, (start, end) in enumerate(result["buckets"])], axis=1)


def test_fp16_compression_on_4_ranks_and_with_zero_reduce_scatters_the_cast_sum(tmp_path):
    for ranks, flags in ((4, ()), (2, ("--zero",))):
        result = run(tmp_path, ranks, "fp16", *flags)
        scale = np.ones(1) if flags else per_value_scales(result, "fp16")  # ZeRO: unscaled
        local = (result["local"] * scale).astype(np.float16).astype(np.float64) / scale
        exact = local.sum(axis=0)  # the order of additions differs: within fp16 rounding
        synced = np.concatenate([result[f"synced{r}"] for r in range(ranks)], axis=1) \
            if flags else result["synced0"]
        if flags:  # ZeRO: rank r holds its chunk of every bucket
            exact = np.concatenate([shard_of(exact, result["buckets"], r, ranks)
                                    for r in range(ranks)], axis=1)
        np.testing.assert_allclose(synced, exact, rtol=2e-3, atol=1e-3 * np.abs(exact).max())


def test_an_fp16_sum_that_overflows_skips_the_step_on_every_rank(tmp_path):
    """40000 + 40000 is Inf in float16: every rank finds the overflow in the synchronised
    gradient and leaves its parameters as they were (never applied as Inf)."""
    verdicts = run(tmp_path, 2, "fp16", "--overflow")["verdicts"]
    assert verdicts.tolist() == [[True, True, 1], [True, True, 1]]


def shard_of(values, buckets, rank, ranks):
    """Rank `rank`'s ZeRO-1 shard: its chunk of each bucket (dist_nn.distributed.zero)."""
    pieces = []
    for start, end in buckets:
        chunk = -(-(end - start) // ranks)
        pieces.append(values[..., start + min(rank * chunk, end - start):
                             start + min((rank + 1) * chunk, end - start)])
    return np.concatenate(pieces, axis=-1)


def gram_schmidt(p):
    p = p.copy()
    for i in range(p.shape[1]):
        for j in range(i):
            p[:, i] -= (p[:, j] @ p[:, i]) * p[:, j]
        p[:, i] /= np.linalg.norm(p[:, i])
    return p


def powersgd_reference(local, shapes, initial_q, rank):
    """The synchronised gradient of every step from the ranks' local gradients (ranks x steps x
    values), each a share of the global mean: compressed matrices are those with
    2 r (rows + cols) <= rows cols."""
    ranks, steps, _ = local.shape
    layout, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        rows = shape[0] if len(shape) >= 2 else 0
        compressed = rows and 2 * rank * (rows + size // rows) <= size
        layout.append((offset, size, (rows, size // rows) if compressed else None))
        offset += size
    q = list(initial_q)
    errors = [[np.zeros(m) for _, _, m in layout if m] for _ in range(ranks)]
    result = []
    for step in range(steps):
        synced, k = local[:, step].sum(axis=0), 0
        for offset, size, matrix in layout:
            if matrix is None:
                continue  # summed uncompressed
            ms = [local[r, step, offset:offset + size].reshape(matrix) + errors[r][k]
                  for r in range(ranks)]
            p = gram_schmidt(sum(m @ q[k] for m in ms))
            q[k] = sum(m.T @ p for m in ms)
            approximation = p @ q[k].T
            for r in range(ranks):
                errors[r][k] = ms[r] - approximation / ranks
            synced[offset:offset + size] = approximation.reshape(-1)
            k += 1
        result.append(synced)
    return np.array(result)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("ranks", [2, 4])
def test_powersgd_equals_the_papers_algorithm_step_by_step(tmp_path, ranks, transport):
    result = run(tmp_path, ranks, "powersgd", transport=transport)
    shapes = [ast.literal_eval(s) for s in result["shapes"]]
    initial_q = [result[f"q{i}"] for i in range(sum(k.startswith("q") for k in result))]
    assert len(initial_q) == 4  # the conv and linear weights (out x in*k*k); biases are not
    expected = powersgd_reference(result["local"], shapes, initial_q, RANK)
    for r in range(ranks):
        np.testing.assert_allclose(result[f"synced{r}"], expected, rtol=1e-9,
                                   atol=1e-12 * np.abs(expected).max())
    exact = result["local"].sum(axis=0)
    assert np.abs(result["synced0"] - exact).max() > 1e-3 * np.abs(exact).max()

"""ZeRO-1: sharded optimizer state equals one unsharded process step by step, on 2 and 4 ranks
under mpiexec; checkpoints move between world sizes and between sharded and unsharded runs."""
import numpy as np
import pytest

from dist_nn import backend, models, nn, optim
from dist_nn.distributed import GradSync, LocalCommunicator, ShardedOptimizer, sharded
from tests.distributed import mpi
from tests.distributed.conftest import WORLD_SIZES
from tests.distributed.programs.sharded import OPTIMIZERS, VARIANTS

MAIN = ("sgd", "nesterov", "adam", "adamw")
CASES = [f"{o}:{v}" for o in MAIN for v in VARIANTS] + \
    [f"{o}:even" for o in OPTIMIZERS if o not in MAIN]
RESUMED = ("resume:adam", "resume:sgd")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if mpi.mpirun.mpiexec_path() is None:
        pytest.skip("no mpiexec (pip install mpich)")
    seen = {}
    for n in WORLD_SIZES:
        path = tmp_path_factory.mktemp(f"sharded-{n}")
        seen[n] = mpi.run_json(n, "sharded", path, path, *CASES, *RESUMED, "overlap:mlp",
                               "overflow:fp16")
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES)
def test_sharded_ranks_equal_one_process_step_by_step(results, ranks, case):
    """float64, 20 steps; variants: even shards, an uneven last batch (rank r holds 3 - r
    samples), 2 micro-batches of accumulation, a frozen layer, warmup + cosine schedule,
    clipping by the global gradient norm."""
    seen = results[ranks][case]
    assert len(seen["errors"]) == 20
    assert max(seen["errors"]) < 1e-10, seen["errors"]
    assert seen["state_error"] < 1e-10  # the gathered state is the unsharded one
    assert seen["ranks_identical"]
    assert seen["lr"][0] == seen["lr"][1]
    assert seen["norm_error"] < 1e-10  # the global gradient norm, the same as unsharded
    if case.endswith(":clip"):
        assert seen["clipped"] >= 10  # clipping acted in most steps


@pytest.mark.slow
@pytest.mark.parametrize("ranks", WORLD_SIZES)
def test_each_rank_holds_its_share_of_the_optimizer_state(results, ranks):
    for case in CASES:
        seen = results[ranks][case]
        assert sum(seen["shard_values"]) == seen["unsharded_values"]
        # chunks of ceil(bucket / N) values per bucket: at most one more value per bucket
        assert max(seen["shard_values"]) <= seen["unsharded_values"] / ranks + 10, case


@pytest.mark.slow
@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("case", RESUMED)
def test_resume_across_world_sizes_and_sharding_is_exact(results, ranks, case):
    """Runs of 5 steps: sharded on N, sharded on another size, unsharded, sharded again."""
    seen = results[ranks][case]
    sizes = [size for size, _ in seen["chain"]]
    assert len(set(sizes)) > 1 and [s for _, s in seen["chain"]] == [True, True, False, True]
    assert seen["parameter_error"] < 1e-10 and seen["state_error"] < 1e-10, seen


@pytest.mark.slow
@pytest.mark.parametrize("ranks", WORLD_SIZES)
def test_first_reduce_scatter_starts_before_backward_ends(results, ranks):
    seen = results[ranks]["overlap:mlp"]
    assert seen["buckets"] >= 3 and len(seen["starts"]) == seen["buckets"]
    assert seen["starts"][0] < seen["modules"], seen  # while backward was still running
    assert seen["starts"] == sorted(seen["starts"])
    assert seen["parameters_identical"]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", WORLD_SIZES)
def test_fp16_overflow_in_one_shard_skips_the_step_on_every_rank(results, ranks):
    """Steps 1 and 3 get an Inf in rank 0's shard only (and at the initial scale 2^16 float16
    also overflows in some shards by itself; in step 3 every other rank's shard is finite):
    every rank skips exactly the steps in which any shard overflowed, even with its own shard
    finite, and halves its loss scale; the ranks stay identical."""
    seen = results[ranks]["overflow:fp16"]
    any_overflow = [not all(step) for step in zip(*(rank["local"] for rank in seen))]
    assert any_overflow[1] and any_overflow[3] and not any_overflow[4]
    assert all(rank["local"][3] for rank in seen[1:])  # in step 3 only rank 0 saw one
    for rank in seen:
        assert rank["agreed"] == [not o for o in any_overflow]
        assert rank["skipped"] == any_overflow
        assert rank == {**seen[0], "local": rank["local"]}  # same scales and parameters
    scale = 2.0**16
    for overflowed, after in zip(any_overflow, seen[0]["scales"]):
        scale = scale / 2 if overflowed else scale
        assert after == scale


def local_run(shard, optimizer="adam", bucket_mb=100 * 8 / 2**20):
    with backend.using("cpu", "float64"):
        backend.seed(0)
        model = models.build("mlp", (10,), 4, hidden=(20, 30))
        make = OPTIMIZERS[optimizer]
        if shard:
            opt, sync = sharded(make, model, LocalCommunicator(), bucket_mb=bucket_mb)
        else:
            opt = make(model.parameters())
            sync = GradSync(model, opt.flat, LocalCommunicator())
        loss = nn.SoftmaxCrossEntropy()
        rng = np.random.default_rng(0)
        for _ in range(3):
            opt.zero_grad()
            loss.forward(model.forward(rng.standard_normal((8, 10))), rng.integers(0, 4, 8))
            model.backward(loss.backward())
            sync.wait()
            opt.step()
        return model, opt, sync


def test_shard_pieces_are_each_buckets_chunk_packed_in_order():
    _, opt, sync = local_run(shard=True)
    assert len(sync.buckets) > 2
    for (start, end, _), piece, part in zip(sync.buckets, sync.shard.pieces, sync.shard.slices):
        assert piece == (start, end)  # one rank: the whole bucket
        np.testing.assert_array_equal(sync.shard.data[part], sync.flat.data[start:end])
    assert [s.start for s in sync.shard.slices[1:]] == [s.stop for s in sync.shard.slices[:-1]]
    assert opt.buffers["exp_avg"].shape == (sync.flat.size,)


def test_one_sharded_process_is_the_unsharded_optimizer():
    plain_model, plain, _ = local_run(shard=False)
    model, opt, sync = local_run(shard=True)
    np.testing.assert_array_equal(sync.flat.data, plain.flat.data)
    state, reference = opt.state_dict(), plain.state_dict()
    assert state["step"] == reference["step"] == 3
    for name, value in reference["buffers"].items():
        np.testing.assert_array_equal(state["buffers"][name], value)
    assert sync.grad_norm() == pytest.approx(float((plain.flat.grad ** 2).sum()) ** 0.5,
                                             rel=1e-12)


def test_sharded_state_loads_into_an_unsharded_optimizer_and_back():
    _, opt, _ = local_run(shard=True)
    _, plain, _ = local_run(shard=False, optimizer="adam")
    plain.load_state_dict(opt.state_dict())
    _, again, _ = local_run(shard=True, bucket_mb=1.0)  # other buckets
    again.load_state_dict(plain.state_dict())
    for name, value in plain.state_dict()["buffers"].items():
        np.testing.assert_array_equal(again.state_dict()["buffers"][name], value)


def test_state_of_another_model_is_refused():
    _, opt, _ = local_run(shard=True)
    state = opt.state_dict()
    state["buffers"] = {k: v[:-1] for k, v in state["buffers"].items()}
    with pytest.raises(ValueError, match="trainable parameters"):
        opt.load_state_dict(state)


def test_zero_grad_clears_the_whole_gradient_and_hyperparameters_reach_the_optimizer():
    _, opt, sync = local_run(shard=True)
    opt.zero_grad()
    assert not sync.flat.grad.any()
    opt.lr = 0.5  # as a schedule sets it
    assert opt.optimizer.lr == 0.5 and opt.lr == 0.5


def test_optimizer_must_be_built_on_the_shard():
    model, _, sync = local_run(shard=True)
    with pytest.raises(ValueError, match="shard"):
        ShardedOptimizer(optim.SGD(model.parameters(), lr=0.1), sync)


"""GradSync: N ranks equal one process with the N-times-larger batch; buckets overlap
backward; accumulation and frozen parameters."""
import pytest

from dist_nn import models, optim
from dist_nn.distributed import GradSync, LocalCommunicator
from tests.distributed.conftest import EQUIVALENCE_CASES, WORLD_SIZES
from tests.distributed.programs.equivalence import CLIP_NORM

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("case", [c for c in EQUIVALENCE_CASES if not c.endswith("no_syncbn")])
def test_n_ranks_equal_one_process_step_by_step(equivalence, ranks, case):
    """float64, 20 SGD steps (momentum, weight decay), SyncBN; variants: even shards, an
    uneven last batch (rank r holds 3 - r samples), 2 micro-batches of accumulation, and
    gradient clipping (with uneven last batches)."""
    result = equivalence[ranks][case]
    assert len(result["errors"]) == 20
    assert max(result["errors"]) < 1e-10, result["errors"]
    assert result["ranks_identical"]


@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_clipping_was_active(equivalence, ranks, model):
    """The clip variant (optim.clip_grad_norm on the synchronized gradient, every rank alike)
    equals one process above only if clipping really scaled the gradients."""
    assert min(equivalence[ranks][f"{model}:clip"]["grad_norms"]) > CLIP_NORM


@pytest.mark.parametrize("ranks", WORLD_SIZES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_plain_batchnorm_differs_so_the_comparison_can_fail(equivalence, ranks, model):
    assert max(equivalence[ranks][f"{model}:no_syncbn"]["errors"]) > 1e-3


@pytest.mark.parametrize("ranks", WORLD_SIZES)
def test_first_bucket_starts_before_backward_ends(collectives, ranks):
    seen = collectives[ranks]["overlap"]
    assert seen["buckets"] >= 3
    assert seen["starts"][0] < seen["modules"], seen  # while backward was still running
    assert seen["starts"] == sorted(seen["starts"])
    assert seen["gradients_identical"]


@pytest.mark.parametrize("ranks", WORLD_SIZES)
def test_without_overlap_buckets_start_after_backward(collectives, ranks):
    seen = collectives[ranks]["no_overlap"]
    assert seen["starts"] == [seen["modules"]] * seen["buckets"]
    assert seen["gradients_identical"]


def flat_model(bucket_mb, frozen=False):
    model = models.build("mlp", (10,), 4, hidden=(20, 30))
    if frozen:
        model[1].weight.requires_grad = False
    opt = optim.SGD(model.parameters(), lr=0.1)
    return model, opt, GradSync(model, opt.flat, LocalCommunicator(), bucket_mb=bucket_mb)


def test_buckets_cover_the_buffer_in_order_at_parameter_boundaries():
    _, opt, sync = flat_model(bucket_mb=100 * 4 / 2**20)  # 100 float32 values
    starts = [start for start, _, _ in sync.buckets]
    ends = [end for _, end, _ in sync.buckets]
    assert starts[0] == 0 and ends[-1] == opt.flat.size and starts[1:] == ends[:-1]
    boundaries = {0} | {end for _, end in opt.flat.offsets}
    assert set(starts) <= boundaries and len(sync.buckets) > 2
    # a bucket closes once it reaches the size; a large parameter is a bucket alone
    assert all(end - start >= 100 for start, end, _ in sync.buckets[:-1])


def test_frozen_parameters_take_no_part():
    model, opt, sync = flat_model(bucket_mb=1.0, frozen=True)
    synced = {id(p) for _, _, params in sync.buckets for p in params}
    assert id(model[1].weight) not in synced and id(model[1].bias) in synced
    assert model[1] in sync.hooked  # its bias is still trained


def test_single_process_needs_no_hooks():
    model, _, sync = flat_model(bucket_mb=1.0)
    assert all("_backward_hooks" not in vars(m) for _, m in model.named_modules())
    sync.wait()  # nothing to do, nothing to fail

"""The CuPy path: every layer case, whole models and optimizers on the GPU give what the
NumPy path and PyTorch give. Skipped without CuPy and a CUDA GPU (run bench/gpu_checks.sh on
a GPU machine)."""
import os
import sys

import numpy as np
import pytest

from dist_nn import backend, models, nn, optim
from launch import mpirun
from tests.distributed.mpi import ROOT, needs_mpi, pythonpath
from tests.nn import reference_check as check
from tests.reference import fixtures, layers

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a CUDA GPU")]
ON_STANDIN = os.environ.get("DIST_NN_CUPY_STANDIN") == "1"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in layers.CASES])
def test_layer_on_gpu_matches_torch_fixture(case):
    inputs, reference = check.split_fixture(case)
    check.assert_matches(check.our_outputs(case, inputs, device="gpu"), reference, case.name)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in layers.CASES])
def test_layer_on_gpu_float32_matches_numpy(case):
    inputs, _ = check.split_fixture(case)
    on_cpu = check.our_outputs(case, inputs, "float32", "cpu")
    check.assert_matches(check.our_outputs(case, inputs, "float32", "gpu"), on_cpu, case.name,
                         check.FLOAT32_TOLERANCE)


def train_steps(device, name, shape, steps=3):
    """Parameters after a few SGD steps of a model, as NumPy arrays."""
    with backend.using(device, "float64"):
        backend.seed(0)
        model = models.build(name, shape, 10, dropout=0.0) if name in ("mlp", "cnn") else \
            models.build(name, shape, 10)
        loss = nn.SoftmaxCrossEntropy()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        rng = np.random.default_rng(0)
        x = backend.to_device(rng.standard_normal((8,) + shape))
        y = backend.to_device(rng.integers(0, 10, 8))
        for _ in range(steps):
            opt.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward(loss.backward())
            opt.step()
        return model.state_dict()


@pytest.mark.parametrize("name, shape", [("mlp", (1, 8, 8)), ("cnn", (3, 16, 16)),
                                         ("resnet20", (3, 16, 16))])
def test_training_steps_on_gpu_match_cpu(name, shape):
    on_cpu, on_gpu = train_steps("cpu", name, shape), train_steps("gpu", name, shape)
    for key, value in on_cpu.items():
        np.testing.assert_allclose(on_gpu[key], value, rtol=1e-9, atol=1e-11, err_msg=key)


@pytest.mark.skipif(fixtures.torch_or_none() is None, reason="needs torch")
def test_resnet20_on_gpu_matches_torch_cuda():
    torch = fixtures.torch_or_none()
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from dist_nn.torch_interop import to_torch_module
    with backend.using("gpu", "float64"):
        backend.seed(1)
        model = models.build("resnet20", (3, 16, 16), 10)
        twin = to_torch_module(model).cuda()
        x = np.random.default_rng(2).standard_normal((4, 3, 16, 16))
        dy = np.random.default_rng(3).standard_normal((4, 10))
        y = model.forward(backend.to_device(x))
        dx = model.backward(backend.to_device(dy))
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    ty = twin(tx)
    ty.backward(torch.tensor(dy, device="cuda"))
    np.testing.assert_allclose(backend.to_host(y), ty.detach().cpu().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(backend.to_host(dx), tx.grad.cpu().numpy(), rtol=1e-8, atol=1e-11)
    theirs = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(backend.to_host(p.grad), theirs[name].grad.cpu().numpy(),
                                   rtol=1e-8, atol=1e-11, err_msg=name)


# The Trainer end to end on the GPU path: a few steps of each, on the embedded digits.
TRAINER_CASES = {
    "cnn": ["model.name=cnn"],
    "resnet20": ["model.name=resnet20"],
    "fp16": ["model.name=cnn", "train.amp=fp16"],
    "bf16": ["model.name=resnet20", "train.amp=bf16"],
    "recipe": ["model.name=cnn", "optim.name=adamw", "optim.clip_grad_norm=0.5",
               "train.ema_decay=0.9", "train.label_smoothing=0.1", "schedule.name=cosine",
               "schedule.warmup_epochs=0.1"],
    "augment": ["model.name=cnn", "augment.enabled=true", "augment.rotate=10",
                "augment.scale=0.1", "augment.brightness=0.1", "augment.contrast=0.1",
                "augment.noise=0.05", "augment.cutout=2", "augment.probability=1"],
}


def fit(tmp_path, device, overrides, steps=4):
    """The Trainer's summary and final parameters (NumPy) after `steps` steps on `device`."""
    from dist_nn import Trainer
    run_dir = tmp_path / device
    trainer = Trainer(None, [f"train.device={device}", f"train.max_steps={steps}",
                             f"log.run_dir={run_dir}", "log.tensorboard=off", *overrides])
    summary = trainer.fit()
    assert summary["step"] == steps and np.isfinite(summary["val_loss"])
    assert list((run_dir / "checkpoints").glob(f"step-*{steps}.h5")), "no final checkpoint"
    return summary, {k: backend.to_host(v) for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("case", TRAINER_CASES)
def test_trainer_runs_on_gpu(tmp_path, case):
    fit(tmp_path, "gpu", TRAINER_CASES[case])


@pytest.mark.skipif(not ON_STANDIN, reason="counts generators on the CuPy stand-in")
def test_dropout_draws_from_generators_quick_to_set_up(tmp_path):
    """Dropout's generator is re-derived each step (masks a function of seed, rank and step:
    exact resume): on Philox, set up in O(1), not default_rng's XORWOW (a skip-ahead per
    state, ms a step)."""
    from cupy import _standin
    with _standin.counting() as counted:
        fit(tmp_path, "gpu", ["model.name=cnn", "model.dropout=0.5"])
    assert counted.generators_created >= 4  # one a step at least
    assert counted.slow_generator_setups == 0, dict(counted.by_site["slow_generator_setups"])


def test_trainer_on_gpu_equals_cpu_in_float64(tmp_path):
    """resnet20 (no dropout, no augmentation): the Trainer's steps on the GPU path reach the
    CPU's parameters, BatchNorm statistics included."""
    overrides = ["model.name=resnet20", "train.dtype=float64"]
    _, on_cpu = fit(tmp_path, "cpu", overrides)
    _, on_gpu = fit(tmp_path, "gpu", overrides)
    assert on_gpu.keys() == on_cpu.keys()
    for key, value in on_cpu.items():
        np.testing.assert_allclose(on_gpu[key], value, rtol=1e-8, atol=1e-10, err_msg=key)


@needs_mpi
@pytest.mark.skipif(not ON_STANDIN and (not backend.gpu_available()
                                        or backend.cupy.cuda.runtime.getDeviceCount() < 2),
                    reason="needs 2 GPUs (or the stand-in's)")
def test_two_ranks_train_through_nccl_with_zero_and_the_recipe(tmp_path):
    """`python -m dist_nn.train` on two ranks, one GPU each: NCCL, ZeRO-1, fp16, clipping,
    EMA and SyncBN; exit 0 with the final checkpoint on disk."""
    run_dir = tmp_path / "run"
    done = mpirun.run(2, [sys.executable, "-m", "dist_nn.train", "train.device=gpu",
                          "train.comm=nccl", "optim.shard=true", "train.amp=fp16",
                          "optim.clip_grad_norm=1.0", "train.ema_decay=0.9",
                          "model.name=resnet20", "train.max_steps=4", f"log.run_dir={run_dir}",
                          "log.tensorboard=off"],
                      env={"PYTHONPATH": pythonpath(), "DIST_NN_STANDIN_GPUS": "2"},
                      capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-> gpu 0" in done.stdout and "-> gpu 1" in done.stdout, done.stdout
    assert list((run_dir / "checkpoints").glob("step-*4.h5"))


def test_batches_are_uploaded_on_a_stream_of_their_own_without_a_host_sync(tmp_path):
    """The reader thread uploads each batch from pinned memory on its own stream; the
    consumer's stream waits for the upload's event. Iterating an epoch makes no host sync
    (on a GPU; on the stand-in: strict hand-off), and the batches are the CPU's."""
    from dist_nn.data import DatasetWriter, DistributedSampler, HDF5Split, Loader
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (200, 3, 4, 4), dtype=np.uint8), rng.integers(0, 10, 200)
    with DatasetWriter(tmp_path / "d.h5", 10, (3, 4, 4), np.uint8, {"train": 200}, "t",
                       chunk_samples=16) as w:
        w.append("train", x, y)
    split = HDF5Split(tmp_path / "d.h5")
    expected = [(b.x.copy(), b.y.copy()) for b in Loader(split, DistributedSampler(200, seed=1),
                                                         32).epoch_batches(0)]
    backend.use("gpu", "float32")
    try:
        loader = Loader(split, DistributedSampler(200, seed=1), 32)
        before = cupy_counts() if ON_STANDIN else None
        batches = [(b.x * 1, b.y * 1) for b in loader.epoch_batches(0)]  # device work only
        if ON_STANDIN:
            import cupy
            after = cupy._standin.counts()
            assert after.syncs == before.syncs  # none: the consumer only waited on events
            assert after.uploads - before.uploads == 2 * len(expected)  # x and y, each once
            # from pinned buffers, one pair per slot (prefetch + 2), again for a last short batch
            assert 2 <= after.pinned_allocations - before.pinned_allocations <= 2 * (2 + 2) + 2
        for (gx, gy), (cx, cy) in zip(batches, expected):
            np.testing.assert_allclose(backend.to_host(gx), cx, rtol=1e-6)
            np.testing.assert_array_equal(backend.to_host(gy), cy)
    finally:
        backend.use("cpu", "float32")


def cupy_counts():
    import cupy
    return cupy._standin.counts()

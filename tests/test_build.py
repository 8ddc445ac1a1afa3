"""build.py: the parts of a run made from its config, and the embedded data set's cache."""
import h5py
import pytest

from dist_nn import build, config, models
from dist_nn.data import DataError
from dist_nn.distributed import GradSync, LocalCommunicator, ShardedGradSync, ShardedOptimizer
from dist_nn.optim import Adam


def test_optim_shard_chooses_the_sharded_optimizer_and_sync():
    model = models.build("mlp", (10,), 4, hidden=(20,))
    for shard in (False, True):
        run = config.load(None, [f"optim.shard={str(shard).lower()}", "optim.name=adam",
                                 "train.bucket_mb=0.0002"])
        opt, sync = build.make_optimizer_and_sync(run, model, LocalCommunicator(), lr=0.5)
        assert isinstance(opt, ShardedOptimizer) == shard
        assert isinstance(sync, ShardedGradSync) == shard and isinstance(sync, GradSync)
        assert isinstance(opt.optimizer if shard else opt, Adam) and opt.lr == 0.5
        assert not sync.average and len(sync.buckets) > 1


def test_the_digits_cache_carries_the_format_version(tmp_path, monkeypatch):
    """A cache file of the old format (no checksums) is never read: the name differs."""
    monkeypatch.setattr(build, "CACHE", tmp_path)
    (tmp_path / "digits.h5").write_bytes(b"an old cache")
    path = build.data_path("digits", LocalCommunicator())
    assert path == str(tmp_path / "digits-v2.h5")
    with h5py.File(path) as f:
        assert f["train/x"].fletcher32


def test_a_cache_that_cannot_be_written_is_one_message(tiny_tmpfs, monkeypatch):
    disk = tiny_tmpfs("16k")
    monkeypatch.setattr(build, "CACHE", disk)
    with pytest.raises(DataError, match=f"cannot build the digits data set in {disk}: No space "
                                        "left on device; set DIST_NN_CACHE"):
        build.data_path("digits", LocalCommunicator())

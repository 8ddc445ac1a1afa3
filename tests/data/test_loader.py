"""Loader: the sampler's samples, normalised on the device, prefetched in the background."""
import threading

import numpy as np
import pytest

from dist_nn.data import DatasetWriter, DistributedSampler, HDF5Split, Loader


@pytest.fixture
def split(tmp_path, samples):
    x, y = samples
    with DatasetWriter(tmp_path / "d.h5", 10, (3, 5, 5), np.uint8, {"train": 40}, "t",
                       chunk_samples=4) as w:
        w.append("train", x, y)
    return HDF5Split(tmp_path / "d.h5")


def normalised(split, x):
    return (x - split.mean[None, :, None, None]) / split.std[None, :, None, None]


@pytest.mark.parametrize("drop_last, sizes", [(False, [16, 16, 8]), (True, [16, 16])])
def test_batches_follow_the_sampler_and_are_normalised(split, samples, drop_last, sizes):
    x, y = samples
    sampler = DistributedSampler(40, 0, 1, seed=3)
    loader = Loader(split, sampler, 16, drop_last=drop_last)
    batches = list(loader)
    assert [len(b.x) for b in batches] == sizes == [b.valid for b in batches]
    assert len(loader) == len(sizes)
    order, _ = sampler.indices()
    for k, batch in enumerate(batches):
        chosen = order[k * 16:(k + 1) * 16]
        assert batch.x.dtype == np.float32
        np.testing.assert_allclose(batch.x, normalised(split, x[chosen]), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batch.y, y[chosen])


def test_padding_is_counted_out(split):
    sampler = DistributedSampler(40, rank=2, size=3, shuffle=False)  # 14 per rank, 2 padded
    batches = list(Loader(split, sampler, 30))  # 10 per rank
    assert [(len(b.x), b.valid) for b in batches] == [(10, 10), (4, 3)]  # 13 real + 1 pad


def test_resume_in_mid_epoch_gives_the_same_batches(split):
    def augment(x, key, epoch):  # stands in for an Augmenter: depends on the key
        return x + np.float32(sum(key) * 1e-3)
    loader = Loader(split, DistributedSampler(40, 0, 1, seed=1), 8, augmenter=augment, seed=7)
    whole = list(loader.epoch_batches(epoch=3))
    resumed = list(loader.epoch_batches(epoch=3, first_batch=2))
    assert len(resumed) == len(whole) - 2
    for a, b in zip(whole[2:], resumed):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    other_epoch = next(iter(loader.epoch_batches(epoch=4)))
    assert not np.array_equal(other_epoch.y, whole[0].y)


def test_reader_errors_reach_the_consumer(split):
    class Failing:
        def __getattr__(self, name):
            return getattr(split, name)

        def read(self, indices):
            raise OSError("disk gone")

        def read_range(self, start, end):
            raise OSError("disk gone")
    loader = Loader(Failing(), DistributedSampler(40, 0, 1), 8)
    with pytest.raises(OSError, match="disk gone"):
        list(loader)


def test_stopping_early_ends_the_reader_thread(split):
    before = threading.active_count()
    loader = Loader(split, DistributedSampler(40, 0, 1), 4, prefetch=1)
    for _ in zip(range(2), loader):
        pass
    assert threading.active_count() == before


def test_cache_serves_the_same_samples(split, samples):
    x, _ = samples
    loader = Loader(split, DistributedSampler(40, 0, 1, seed=2), 40, cache_mb=1)
    assert loader.cached
    order, _ = loader.sampler.indices()
    np.testing.assert_allclose(next(iter(loader)).x, normalised(split, x[order]), atol=1e-5)


@pytest.mark.parametrize("global_batch", [6, 7, 9])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shares_make_up_each_global_batch(split, global_batch, drop_last):
    """Any global batch size on 3 ranks: the ranks' k-th batches together are global batch k
    of the epoch order, shares differing by at most one sample."""
    samplers = [DistributedSampler(40, r, 3, seed=4) for r in range(3)]
    loaders = [Loader(split, s, global_batch, drop_last=drop_last) for s in samplers]
    order = samplers[0].global_order()
    per_rank = [list(loader) for loader in loaders]
    assert len({len(batches) for batches in per_rank}) == 1
    assert len(per_rank[0]) == (40 // global_batch if drop_last else -(-42 // global_batch))
    for k, shares in enumerate(zip(*per_rank)):
        sizes = [len(b.y) for b in shares]
        assert max(sizes) - min(sizes) <= 1
        labels = np.sort(np.concatenate([b.y for b in shares]))
        expected = np.sort(split.labels[order[k * global_batch:(k + 1) * global_batch]])
        np.testing.assert_array_equal(labels, expected)


@pytest.fixture
def big_split(tmp_path):
    """1,000 samples in chunks of 25 (40 chunks)."""
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (1000, 3, 4, 4), dtype=np.uint8), rng.integers(0, 10, 1000)
    with DatasetWriter(tmp_path / "big.h5", 10, (3, 4, 4), np.uint8, {"train": 1000}, "t",
                       chunk_samples=25) as w:
        w.append("train", x, y)
    return HDF5Split(tmp_path / "big.h5"), x, y


@pytest.mark.parametrize("order", ["exact", "chunks"])
@pytest.mark.parametrize("read_ahead_mb", [1, 64])
def test_batches_read_chunk_by_chunk_are_the_samples_of_the_order(big_split, order,
                                                                   read_ahead_mb):
    split, x, y = big_split
    sampler = DistributedSampler(1000, 1, 3, seed=4, order=order, chunks=split.chunks(),
                                 window=4)
    loader = Loader(split, sampler, 48, read_ahead_mb=read_ahead_mb)
    for epoch in (0, 1):
        batches = list(loader.epoch_batches(epoch))
        indices, _ = sampler.indices()
        bounds = loader.bounds()
        for number, batch in enumerate(batches):
            chosen = indices[bounds[number]:bounds[number + 1]]
            np.testing.assert_allclose(batch.x, normalised(split, x[chosen]), atol=1e-5)
            np.testing.assert_array_equal(batch.y, y[chosen])


def test_chunk_order_reads_each_chunk_once_per_epoch(big_split):
    split, _, _ = big_split
    sampler = DistributedSampler(1000, order="chunks", chunks=split.chunks(), window=4)
    loader = Loader(split, sampler, 40, read_ahead_mb=1)
    for epoch in (0, 1):
        list(loader.epoch_batches(epoch))
        assert loader.reader.whole_reads == 40 * (epoch + 1)


def test_a_resumed_epoch_continues_the_chunk_order(big_split):
    split, _, _ = big_split
    sampler = DistributedSampler(1000, order="chunks", chunks=split.chunks(), window=4)
    loader = Loader(split, sampler, 40)
    whole = list(loader.epoch_batches(2))
    for a, b in zip(whole[7:], loader.epoch_batches(2, first_batch=7)):
        np.testing.assert_array_equal(a.x, b.x)

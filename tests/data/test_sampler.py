"""DistributedSampler: each sample once per epoch across ranks, shuffles, global batches."""
import numpy as np
import pytest

from dist_nn.data import DistributedSampler


def rank_indices(n, size, epoch=0, **options):
    samplers = [DistributedSampler(n, r, size, **options) for r in range(size)]
    for s in samplers:
        s.set_epoch(epoch)
    return [s.indices() for s in samplers]


@pytest.mark.parametrize("n, size", [(10, 1), (10, 3), (12, 4), (7, 7), (101, 8)])
def test_every_sample_exactly_once_per_epoch(n, size):
    parts = rank_indices(n, size, epoch=2, seed=5)
    assert len({len(i) for i, _ in parts}) == 1  # equal per-rank counts
    real = np.concatenate([i[m] for i, m in parts])
    assert sorted(real.tolist()) == list(range(n))  # padding is marked, not counted
    padded = np.concatenate([i[~m] for i, m in parts])
    assert len(padded) == len(parts[0][0]) * size - n < size


@pytest.mark.parametrize("n, size", [(10, 3), (12, 4), (101, 8)])
def test_drop_last_sees_each_kept_sample_once(n, size):
    parts = rank_indices(n, size, seed=5, drop_last=True)
    every = np.concatenate([i for i, _ in parts])
    assert len(every) == n // size * size and len(set(every.tolist())) == len(every)
    assert all(m.all() for _, m in parts)


def test_order_differs_between_epochs_and_repeats_with_the_seed():
    a = rank_indices(50, 2, epoch=0, seed=1)[0][0]
    assert not np.array_equal(a, rank_indices(50, 2, epoch=1, seed=1)[0][0])
    np.testing.assert_array_equal(a, rank_indices(50, 2, epoch=0, seed=1)[0][0])
    assert not np.array_equal(a, rank_indices(50, 2, epoch=0, seed=2)[0][0])
    np.testing.assert_array_equal(rank_indices(6, 2, shuffle=False)[1][0], [1, 3, 5])


def test_kth_batches_of_all_ranks_form_the_kth_global_batch():
    n, size, batch = 40, 4, 3
    parts = rank_indices(n, size, seed=9)
    order = DistributedSampler(n, 0, size, seed=9).global_order()
    for k in range(len(parts[0][0]) // batch):
        together = np.concatenate([i[k * batch:(k + 1) * batch] for i, _ in parts])
        assert sorted(together) == sorted(order[k * batch * size:(k + 1) * batch * size])


def test_more_ranks_than_samples_is_refused():
    with pytest.raises(ValueError, match=r"fewer samples \(5\) than ranks \(8\)"):
        DistributedSampler(5, 0, 8)


CHUNKS = [(s, min(s + 7, 100)) for s in range(0, 100, 7)]  # 15 chunks, the last of 2


@pytest.mark.parametrize("window", [1, 3, 20])
def test_chunk_order_is_a_permutation_each_epoch_and_keeps_chunks_within_windows(window):
    sampler = DistributedSampler(100, order="chunks", chunks=CHUNKS, window=window, seed=5)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = sampler.global_order()
        assert sorted(order) == list(range(100))
        orders.append(order)
        chunk_of = np.searchsorted([s for s, _ in CHUNKS], order, side="right") - 1
        seen = 0  # window by window: the samples of `window` whole chunks, shuffled together
        while seen < 100:
            chunks = set()
            while seen < 100 and (len(chunks) < window or chunk_of[seen] in chunks):
                chunks.add(chunk_of[seen])
                seen += 1
            assert sum(e - s for s, e in (CHUNKS[c] for c in chunks)) == \
                sum(1 for c in chunk_of if c in chunks)
    assert not np.array_equal(orders[0], orders[1])
    if window > 1:  # shuffled within the window, not chunk after chunk
        assert any(np.diff(orders[0][:7]) != 1)


@pytest.mark.parametrize("size", [2, 4])
def test_chunk_order_is_the_same_for_any_world_size(size):
    one = DistributedSampler(100, order="chunks", chunks=CHUNKS, window=4, seed=1,
                             drop_last=True)
    ranks = [DistributedSampler(100, r, size, order="chunks", chunks=CHUNKS, window=4, seed=1,
                                drop_last=True) for r in range(size)]
    for epoch in (0, 1):
        for sampler in (one, *ranks):
            sampler.set_epoch(epoch)
        everyone = np.stack([s.indices()[0] for s in ranks], axis=1).reshape(-1)
        np.testing.assert_array_equal(everyone, one.indices()[0][:len(everyone)])


def test_chunk_order_needs_chunks_that_cover_the_samples():
    with pytest.raises(ValueError, match="cover the 100 samples"):
        DistributedSampler(100, order="chunks", chunks=CHUNKS[:-1])

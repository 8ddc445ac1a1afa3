"""Data loading speed and memory: dist_nn's Loader against a PyTorch DataLoader.

    python bench/data.py [--samples 100000] [--batch 256] [--rss-gb 2] [--cache-mb 600]
        [--dir DIR]

1. Reading orders (issue 23's table): a CIFAR-shaped synthetic HDF5 file (uint8, 3x32x32,
   `--samples`, 1 MB chunks), one core, page cache warm, no augmentation, batches of
   `--batch`, through the Loader (normalised float32): the whole split in memory (shuffled);
   from the file in order; h5py reading the whole dataset at once; from the file shuffled
   in `exact` order one batch at a time (the reader as it was: a read ahead of 1 MiB), in
   `exact` order with the default 64 MiB read-ahead (chunks coalesced across batches), and
   in `chunks` order (window 16). The peer in the same run: PyTorch's DataLoader over the same
   file with shuffling, reading sample by sample with h5py (0 and 1 worker processes).
2. With augmentation, as a training run reads: flip (p=0.5), pad-4-and-crop and Gaussian
   noise (std 0.05, p=0.5) on a 20,000-sample file, dist_nn against the PyTorch DataLoader
   doing the same with torch CPU ops; and what the `cnn` model consumes in training (batch
   64, one thread), so that the loader's margin over training shows.
3. Memory: a `--cache-mb`-sized split cached by 2 ranks on one node, once per rank (each its
   own copy) and once per node (the shared window): the ranks' proportional set size (PSS)
   added by the cache; and `--rss-gb` GB streamed from the file for one epoch by 2 ranks: the
   peak resident set size of each.
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch import mpirun  # noqa: E402

AUGMENT = {"flip": {"p": 0.5}, "crop": {"padding": 4}, "noise": {"std": 0.05, "p": 0.5}}
SAMPLE_BYTES = 3 * 32 * 32


def make_file(path, samples):
    from datasets import synthetic
    if not Path(path).exists():
        synthetic.convert(path, samples, shape=(3, 32, 32), classes=10, dtype="uint8",
                          val_samples=0)
    return path


def loader_rate(path, batch, order="exact", shuffle=True, cache_mb=0, read_ahead_mb=64,
                augment=None, epochs=1):
    """Samples/s of the Loader over `epochs` epochs."""
    from dist_nn.data import DistributedSampler, HDF5Split, Loader
    from dist_nn.data.augment import from_config
    split = HDF5Split(path)
    sampler = DistributedSampler(len(split), seed=0, shuffle=shuffle, order=order,
                                 chunks=split.chunks(), window=16)
    loader = Loader(split, sampler, batch, augmenter=augment and from_config(augment),
                    cache_mb=cache_mb, read_ahead_mb=read_ahead_mb)
    start, count = time.perf_counter(), 0
    for epoch in range(epochs):
        for b in loader.epoch_batches(epoch):
            count += len(b.x)
    return count / (time.perf_counter() - start)


def h5py_rate(path):
    import h5py
    start = time.perf_counter()
    with h5py.File(path) as f:
        count = len(f["train/x"][:])
    return count / (time.perf_counter() - start)


def torch_rate(path, batch, workers, limit, augment=False):
    import h5py
    import torch
    from torch.utils.data import DataLoader, Dataset

    class H5Dataset(Dataset):
        def __init__(self):
            with h5py.File(path) as f:
                self.length = len(f["train/y"])
                self.mean = torch.tensor(f.attrs["mean"], dtype=torch.float32)[:, None, None]
                self.std = torch.tensor(f.attrs["std"], dtype=torch.float32)[:, None, None]
            self.file = None

        def __len__(self):
            return self.length

        def __getitem__(self, i):
            if self.file is None:  # opened in the process that reads (workers fork)
                self.file = h5py.File(path)
            x = (torch.from_numpy(self.file["train/x"][i]).float() - self.mean) / self.std
            if augment:
                if torch.rand(()) < 0.5:
                    x = torch.flip(x, dims=(2,))
                padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
                dy, dx = torch.randint(0, 9, (2,)).tolist()
                x = padded[:, dy:dy + 32, dx:dx + 32]
                if torch.rand(()) < 0.5:
                    x = x + 0.05 * torch.randn_like(x)
            return x, int(self.file["train/y"][i])

    torch.set_num_threads(1)
    loader = DataLoader(H5Dataset(), batch_size=batch, shuffle=True, num_workers=workers)
    start, count = time.perf_counter(), 0
    for x, _ in loader:
        count += len(x)
        if count >= limit:
            break
    return count / (time.perf_counter() - start)


def cnn_rate():
    import numpy as np

    from dist_nn import backend, models, nn, optim
    backend.use("cpu", "float32")
    model = models.build("cnn", (3, 32, 32), 10)
    nn.skip_input_grad(model)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = nn.SoftmaxCrossEntropy()
    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 64)
    for step in range(13):
        if step == 3:
            start = time.perf_counter()
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    return 10 * 64 / (time.perf_counter() - start)


def orders(path, batch, samples):
    """Part 1: the reading orders, and PyTorch's DataLoader on the same file."""
    rates = {
        "whole split in memory, shuffled": loader_rate(path, batch, cache_mb=10**6, epochs=3),
        "from the file, in order": loader_rate(path, batch, shuffle=False),
        "h5py reading the whole dataset": h5py_rate(path),
        "from the file, exact, one batch at a time": loader_rate(path, batch, read_ahead_mb=1),
        "from the file, exact (64 MiB read-ahead)": loader_rate(path, batch),
        "from the file, chunks (window 16)": loader_rate(path, batch, order="chunks"),
    }
    limit = min(samples, 20000)  # sample by sample it is slow: a bounded part of an epoch
    peers = {f"PyTorch DataLoader, {w} worker{'s' * (w != 1)}, shuffled":
             torch_rate(path, batch, w, limit) for w in (0, 1)}
    in_order = rates["from the file, in order"]
    print(f"# {samples} samples (3x32x32 uint8, 1 MB chunks), batch {batch}, one core, no "
          "augmentation")
    print(f"{'':44} {'samples/s':>10} {'/ in order':>10} {'/ PyTorch 0 workers':>20}")
    torch0 = peers["PyTorch DataLoader, 0 workers, shuffled"]
    for name, rate in {**rates, **peers}.items():
        print(f"{name:44} {rate:10.0f} {rate / in_order:10.2f} {rate / torch0:20.2f}",
              flush=True)


def augmented(path, batch, samples):
    """Part 2: with augmentation, against PyTorch doing the same, and what training eats."""
    rates = {"dist_nn Loader": loader_rate(path, batch, augment=AUGMENT),
             "PyTorch DataLoader, 0 workers": torch_rate(path, batch, 0, samples, True),
             "PyTorch DataLoader, 1 worker": torch_rate(path, batch, 1, samples, True)}
    consumed = cnn_rate()
    print(f"# {samples} samples, batch {batch}, flip + crop + noise, one thread each")
    for name, rate in rates.items():
        print(f"{name:32} {rate:9.0f} samples/s   dist_nn / this: "
              f"{rates['dist_nn Loader'] / rate:5.2f}")
    print(f"{'cnn training consumes':32} {consumed:9.0f} samples/s   dist_nn / this: "
          f"{rates['dist_nn Loader'] / consumed:5.2f}", flush=True)


def pss_kib():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def cache_worker(path, shared):
    """Under mpiexec: cache the split (one copy per node, or one per rank); the PSS it added."""
    from dist_nn.data import HDF5Split
    from dist_nn.distributed import setup
    comm = setup("mpi", "cpu")
    split = HDF5Split(path)
    before = pss_kib()
    start = time.perf_counter()
    split.load_into_memory(2**40, comm if shared else None)
    seconds = time.perf_counter() - start
    added = comm.allgather_obj(pss_kib() - before)
    if comm.rank == 0:
        print(f"  {'one copy per node' if shared else 'one copy per rank':18}: split "
              f"{split.nbytes / 2**20:.0f} MiB, PSS added by rank: "
              f"{', '.join(f'{kib / 1024:.0f}' for kib in added)} MiB, together "
              f"{sum(added) / 1024:.0f} MiB (loaded in {seconds:.2f} s)", flush=True)


def rss_worker(path, batch):
    from dist_nn.data import DistributedSampler, Loader, open_split
    from dist_nn.data.augment import from_config
    from dist_nn.distributed import setup
    comm = setup("mpi", "cpu")
    split = open_split(path, "train", comm, check_values=False)
    loader = Loader(split, DistributedSampler(len(split), comm.rank, comm.size, seed=0), batch,
                    augmenter=from_config(AUGMENT))
    start, count = time.perf_counter(), 0
    for b in loader:
        count += len(b.x)
    rate = count / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for rank, (samples, mib, speed) in enumerate(comm.allgather_obj((count, peak, rate))):
        if comm.rank == 0:
            print(f"  rank {rank}: {samples} samples streamed, {speed:.0f} samples/s, "
                  f"peak RSS {mib:.0f} MiB", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rss-gb", type=float, default=2.0, help="0 skips the streaming part")
    parser.add_argument("--cache-mb", type=int, default=600, help="0 skips the cache part")
    parser.add_argument("--dir", default=None, help="where the synthetic files go (kept)")
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache-worker", help=argparse.SUPPRESS)
    parser.add_argument("--shared", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        return rss_worker(args.rss_worker, args.batch)
    if args.cache_worker:
        return cache_worker(args.cache_worker, args.shared)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    directory = Path(args.dir or tempfile.mkdtemp(prefix="dist_nn-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    orders(make_file(directory / f"synthetic-{args.samples}.h5", args.samples), args.batch,
           args.samples)
    augmented(make_file(directory / "synthetic-20000.h5", 20000), args.batch, 20000)
    if args.cache_mb > 0:
        samples = int(args.cache_mb * 2**20 / SAMPLE_BYTES)
        cached = make_file(directory / f"synthetic-{samples}.h5", samples)
        print(f"# a {args.cache_mb} MiB split cached by 2 ranks of one node", flush=True)
        for shared in ([], ["--shared"]):
            mpirun.run(2, [sys.executable, __file__, "--cache-worker", str(cached), *shared],
                       check=True)
    if args.rss_gb > 0:
        samples = int(args.rss_gb * 2**30 / SAMPLE_BYTES)
        big = make_file(directory / f"synthetic-{samples}.h5", samples)
        size = Path(big).stat().st_size / 2**30
        print(f"# streaming {size:.2f} GiB ({samples} samples) with 2 ranks, batch {args.batch}",
              flush=True)
        done = mpirun.run(2, [sys.executable, __file__, "--rss-worker", str(big), "--batch",
                              str(args.batch)])
        sys.exit(done.returncode)


if __name__ == "__main__":
    main()

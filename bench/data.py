"""Data loading speed and memory: dist_nn's Loader against a PyTorch DataLoader.

    python bench/data.py [--samples 20000] [--batch 256] [--rss-gb 2] [--dir DIR]

1. Speed: CIFAR-shaped synthetic HDF5 (uint8, 3x32x32), read in a shuffled order, augmented
   with flip (p=0.5), pad-4-and-crop and Gaussian noise (std 0.05, p=0.5), normalised to
   float32. dist_nn: HDF5Split + DistributedSampler + Loader (reader thread, batched device
   augmentation), streaming from the file (no in-memory cache). PyTorch: a Dataset that
   reads sample by sample with h5py and applies the same augmentations with torch CPU ops,
   under a DataLoader (num_workers 0, i.e. one core like dist_nn's, and 1 worker process).
   One thread each. Also measured: what the `cnn` model consumes in training (batch 64, one
   thread), so that the loader's margin over training shows.
2. Memory: `--rss-gb` GB of the same data streamed through the Loader for one epoch by each
   of 2 ranks (under mpiexec); the peak resident set size of each rank.
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


def ours_rate(path, batch, epochs=2):
    from dist_nn.data import DistributedSampler, HDF5Split, Loader
    from dist_nn.data.augment import from_config
    split = HDF5Split(path)
    loader = Loader(split, DistributedSampler(len(split), seed=0), batch,
                    augmenter=from_config(AUGMENT))
    start, count = time.perf_counter(), 0
    for epoch in range(epochs):
        for b in loader.epoch_batches(epoch):
            count += len(b.x)
    return count / (time.perf_counter() - start)


def torch_rate(path, batch, workers, limit):
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
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rss-gb", type=float, default=2.0, help="0 skips the memory part")
    parser.add_argument("--dir", default=None, help="where the synthetic files go (kept)")
    parser.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_worker:
        return rss_worker(args.rss_worker, args.batch)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    directory = Path(args.dir or tempfile.mkdtemp(prefix="dist_nn-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    path = make_file(directory / f"synthetic-{args.samples}.h5", args.samples)
    rates = {"dist_nn Loader": ours_rate(path, args.batch),
             "PyTorch DataLoader, 0 workers": torch_rate(path, args.batch, 0, args.samples),
             "PyTorch DataLoader, 1 worker": torch_rate(path, args.batch, 1, args.samples)}
    consumed = cnn_rate()
    print(f"# {args.samples} samples, batch {args.batch}, flip + crop + noise, one thread each")
    for name, rate in rates.items():
        print(f"{name:32} {rate:9.0f} samples/s   dist_nn / this: "
              f"{rates['dist_nn Loader'] / rate:5.2f}")
    print(f"{'cnn training consumes':32} {consumed:9.0f} samples/s   dist_nn / this: "
          f"{rates['dist_nn Loader'] / consumed:5.2f}", flush=True)
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

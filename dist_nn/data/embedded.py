"""The embedded default data set: scikit-learn's handwritten digits (1797 8x8 grey images,
values 0-16, 10 classes; from the UCI ML repository), stored in the package as digits.npz so
that no download and no scikit-learn are needed. `build` writes it in the HDF5 layout with a
fixed, seeded 80/20 train/val split."""
from pathlib import Path

import numpy

from .writer import DatasetWriter

EMBEDDED = Path(__file__).with_name("digits.npz")
SOURCE = "scikit-learn digits (UCI optical recognition of handwritten digits), embedded"


def arrays():
    """(images (1797, 1, 8, 8) uint8 in 0..16, labels (1797,) int64)."""
    with numpy.load(EMBEDDED) as data:
        return data["images"], data["labels"].astype(numpy.int64)


def build(path, val_fraction=0.2, seed=0, **output):
    """Write the digits to `path` (or shard files; `output`: DatasetWriter options such as
    shards, chunk_samples, compression); no /val when val_fraction is 0. Returns the paths."""
    images, labels = arrays()
    order = numpy.random.default_rng(seed).permutation(len(images))
    held_out = int(round(len(images) * val_fraction))
    splits = {"train": order[held_out:], "val": order[:held_out]}
    splits = {name: part for name, part in splits.items() if len(part)}
    with DatasetWriter(path, 10, images.shape[1:], numpy.uint8,
                       {name: len(part) for name, part in splits.items()}, SOURCE,
                       **output) as writer:
        for name, part in splits.items():
            writer.append(name, images[part], labels[part])
    return writer.paths

"""The embedded default data set (scikit-learn's 8x8 digits, dist_nn/data/digits.npz) in the
HDF5 layout; and, for maintainers, regenerating that embedded copy from scikit-learn."""
import os

import numpy

from dist_nn.data import embedded


def convert(out=None, val_fraction=0.2, seed=0, refresh_embedded=False, **output):
    """Write the digits to `out` with a seeded train/val split (dist_nn.data.embedded.build;
    output: DatasetWriter options), after regenerating the embedded copy if
    refresh_embedded. Returns the written paths."""
    if out is None and not refresh_embedded:
        raise ValueError("nothing to do: give an output path (--out), refresh_embedded "
                         "(--refresh-embedded), or both")
    paths = [refresh(embedded.EMBEDDED)] if refresh_embedded else []
    if out is not None:
        paths += embedded.build(out, val_fraction, seed, **output)
    return paths


def refresh(path):
    """Write scikit-learn's load_digits() to `path` as the embedded copy: images uint8
    (N, 1, 8, 8) in 0..16, labels uint8; atomically (temporary file, then rename)."""
    from sklearn.datasets import load_digits  # only maintainers need scikit-learn
    data = load_digits()
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        numpy.savez_compressed(f, images=data.images.astype(numpy.uint8)[:, None],
                               labels=data.target.astype(numpy.uint8))
    os.replace(partial, path)
    return path

"""The data validator: files that lie about their contents are refused before anything is
allocated; reads that fail during a run name the file."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from dist_nn.data import DataError, DataReadError, DatasetWriter, HDF5Split, open_split
from dist_nn.distributed import LocalCommunicator
from tests.data.conftest import write_raw


def huge(path):
    """A 3 KB file declaring 10^7 samples of 3x1024x1024 (30 TB) and as many labels."""
    with h5py.File(path, "w") as f:
        f.create_dataset("train/x", (10**7, 3, 1024, 1024), np.uint8, chunks=(1, 3, 64, 64))
        f.create_dataset("train/y", (10**7,), np.int64, chunks=(1024,))
        f.attrs.update(num_classes=10, mean=np.zeros(3), std=np.ones(3))
    return path


def linked(path, samples):
    write_raw(path.with_name("target.h5"), *samples)
    with h5py.File(path, "w") as f:
        f["train/x"] = h5py.ExternalLink("target.h5", "train/x")
        f["train/y"] = samples[1]
        f.attrs.update(num_classes=10, mean=np.zeros(3), std=np.ones(3))
    return path


def external_storage(path, samples):
    """/train/x whose raw bytes live in another file (any readable file or device would do:
    /dev/urandom became training data)."""
    x, y = samples
    source = path.with_name("raw.bin")
    source.write_bytes(x.tobytes())
    write_raw(path, *samples)
    with h5py.File(path, "a") as f:
        del f["train/x"]
        f.create_dataset("train/x", x.shape, x.dtype, external=[(source.name, 0, x.nbytes)])
    return path


def bomb(path, samples):
    """gzip chunks of 1 GiB of zeros each: a few MB of file, 24 GB of memory when read."""
    write_raw(path, *samples)
    with h5py.File(path, "a") as f:
        del f["train/x"]
        f.create_dataset("train/x", (len(samples[0]), 1024, 1024, 1024), np.uint8,
                         chunks=(1, 1024, 1024, 1024), compression="gzip")
    return path


def fifo(path, samples):
    import os
    os.mkfifo(path)  # open() would wait for a writer forever
    return path


def with_val(path, samples, val_shape):
    write_raw(path, *samples)
    with h5py.File(path, "a") as f:
        f["val/x"] = np.zeros(val_shape, np.uint8)
        f["val/y"] = np.zeros(val_shape[0], np.int64)
    return path


LIES = {
    "huge declared shape": (lambda tmp, s: huge(tmp / "h.h5"), r"/train/x declares "
                            r"\(10000000, 3, 1024, 1024\) but stores only 0 of its "
                            r"2560000000 chunks: truncated or forged"),
    "a billion classes": (lambda tmp, s: write_raw(tmp / "c.h5", *s, num_classes=1e9),
                          r"num_classes must be an integer in \[1, 1000000\], got 1.e\+09"),
    "scalar mean": (lambda tmp, s: write_raw(tmp / "m.h5", *s, attrs={"mean": 0.5}),
                    r"mean must hold 3 finite numbers \(one per channel\), got 0.5"),
    "NaN mean": (lambda tmp, s: write_raw(tmp / "n.h5", *s, attrs={"mean": [0, np.nan, 0]}),
                 r"mean must hold 3 finite numbers .* got \[ 0. nan  0.\]"),
    "zero std": (lambda tmp, s: write_raw(tmp / "s.h5", *s, attrs={"std": [1, 0, 1]}),
                 r"std must be > 0 in every channel \(at least float32.s smallest normal number, "
                 r"1.18e-38\), got \[1 0 1\]"),
    "denormal std": (lambda tmp, s: write_raw(tmp / "d.h5", *s, attrs={"std": [1, 1e-40, 1]}),
                     r"std must be > 0 in every channel \(at least float32.s smallest normal"),
    "class names of another count": (
        lambda tmp, s: write_raw(tmp / "k.h5", *s, attrs={"class_names": ["cat", "dog"]}),
        r"class_names must be 10 strings \(one per class\)"),
    "external link": (lambda tmp, s: linked(tmp / "e.h5", s),
                      "/train/x is an external link to target.h5"),
    "external raw storage": (lambda tmp, s: external_storage(tmp / "x.h5", s),
                             r"/train/x keeps its data in external files \(raw.bin, ...\)"),
    "a decompression bomb": (lambda tmp, s: bomb(tmp / "b.h5", s),
                             r"/train/x has chunks of \(1, 1024, 1024, 1024\), 1024 MiB each "
                             r"when read \(at most 256 MiB\)"),
    "a FIFO": (lambda tmp, s: fifo(tmp / "pipe.h5", s),
               "is not a regular file \\(a directory, FIFO or device\\)"),
    "val samples of another shape": (
        lambda tmp, s: with_val(tmp / "v.h5", s, (4, 3, 5, 4)),
        r"/val/x samples \(3, 5, 4\) differ from /train/x samples \(3, 5, 5\)"),
}


@pytest.mark.parametrize("case", list(LIES))
def test_a_file_that_lies_is_one_message(tmp_path, samples, case):
    make, message = LIES[case]
    path = make(tmp_path, samples)
    with pytest.raises(DataError, match=message) as caught:
        open_split(path, "train", LocalCommunicator())
    assert str(caught.value).startswith(str(path))


def test_a_huge_declared_shape_allocates_nothing(tmp_path):
    """Refused in a fresh process whose peak memory grows by less than the declared labels
    alone would take (10^7 int64: 80 MB)."""
    path = huge(tmp_path / "h.h5")
    assert path.stat().st_size < 4096
    done = subprocess.run([sys.executable, "-c", (
        "import resource\n"
        "from dist_nn.data import DataError, open_split\n"
        "from dist_nn.distributed import LocalCommunicator\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "imported = peak()\n"
        "try:\n"
        f"    open_split({str(path)!r}, 'train', LocalCommunicator())\n"
        "except DataError as error:\n"
        "    print(peak() - imported, error)\n")],
        capture_output=True, text=True, timeout=120)
    growth_kib, message = done.stdout.split(" ", 1)
    assert "truncated or forged" in message, done.stderr
    assert int(growth_kib) < 40 * 1024


def flip_a_byte_in_chunk(path, dataset, chunk):
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_chunk_info(chunk).byte_offset
    with open(path, "r+b") as file:
        file.seek(offset + 10)
        value = file.read(1)
        file.seek(offset + 10)
        file.write(bytes([value[0] ^ 0xFF]))


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("cached", [False, True])
def test_bytes_changed_after_writing_fail_the_read_naming_the_file(tmp_path, samples,
                                                                   compression, cached):
    x, y = samples
    with DatasetWriter(tmp_path / "d.h5", 10, (3, 5, 5), np.uint8, {"train": 40}, "t",
                       chunk_samples=4, compression=compression) as w:
        w.append("train", x, y)
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["train/x"].fletcher32 and f["train/y"].fletcher32
    flip_a_byte_in_chunk(tmp_path / "d.h5", "train/x", 3)  # samples 12..15
    split = HDF5Split(tmp_path / "d.h5")
    np.testing.assert_array_equal(split.read([0, 1, 20]), x[[0, 1, 20]])
    with pytest.raises(DataReadError, match=f"{tmp_path / 'd.h5'}: cannot read /train/x: a "
                                            "chunk fails its checksum or is damaged"):
        split.load_into_memory(10**6) if cached else split.read([13])

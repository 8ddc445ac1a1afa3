import pickle
import tarfile

import numpy
import pytest

from datasets import cifar
from tests.datasets.readback import assert_holds, read_back

CIFAR10 = {"data_batch_1": 3, "data_batch_2": 2, "data_batch_3": 4, "data_batch_4": 1,
           "data_batch_5": 2, "test_batch": 3}


def batch(rng, n, labels):
    """A pickled-batch dict as the official files hold it (bytes keys, CHW rows)."""
    return {b"batch_label": b"tiny", b"filenames": [b"%d.png" % i for i in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=numpy.uint8),
            **{key: rng.integers(0, classes, n).tolist() for key, classes in labels.items()}}


def write_batches(folder, batches):
    folder.mkdir(parents=True, exist_ok=True)
    for name, contents in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(contents, f, protocol=2)


def expected(batches, names, key):
    return (numpy.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32),
            numpy.concatenate([batches[n][key] for n in names]).astype(numpy.int64))


@pytest.fixture
def cifar10(tmp_path):
    rng = numpy.random.default_rng(0)
    batches = {name: batch(rng, n, {b"labels": 10}) for name, n in CIFAR10.items()}
    write_batches(tmp_path / "cifar-10-batches-py", batches)
    splits = {"train": expected(batches, [f"data_batch_{k}" for k in range(1, 6)], b"labels"),
              "val": expected(batches, ["test_batch"], b"labels")}
    return tmp_path / "cifar-10-batches-py", splits


def test_cifar10_directory_round_trip(cifar10, tmp_path):
    folder, splits = cifar10
    paths = cifar.convert(folder, tmp_path / "c10.h5")
    assert paths == [tmp_path / "c10.h5"]
    assert_holds(paths[0], splits, 10)
    assert "CIFAR-10" in read_back(paths[0], "train")[2].source


def test_cifar10_archive_equals_directory(cifar10, tmp_path):
    folder, splits = cifar10
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["test_batch", "data_batch_3", "data_batch_1", "data_batch_5",
                     "data_batch_2", "data_batch_4"]:  # not in reading order, like the original
            tar.add(folder / name, arcname=f"cifar-10-batches-py/{name}")
    assert_holds(cifar.convert(archive, tmp_path / "c10.h5")[0], splits, 10)


def test_shards_hold_the_data_between_them(cifar10, tmp_path):
    folder, splits = cifar10
    paths = cifar.convert(folder, tmp_path / "c10.h5", shards=3, chunk_samples=2,
                          compression="gzip")
    assert [p.name for p in paths] == [f"c10-{k:05d}-of-00003.h5" for k in range(3)]
    assert_holds(str(tmp_path / "c10-*-of-00003.h5"), splits, 10)


@pytest.mark.parametrize("coarse, key, classes", [(False, b"fine_labels", 100),
                                                  (True, b"coarse_labels", 20)])
def test_cifar100_label_sets(tmp_path, coarse, key, classes):
    rng = numpy.random.default_rng(1)
    labels = {b"fine_labels": 100, b"coarse_labels": 20}
    batches = {"train": batch(rng, 7, labels), "test": batch(rng, 4, labels)}
    write_batches(tmp_path / "cifar-100-python", batches)
    paths = cifar.convert(tmp_path / "cifar-100-python", tmp_path / "c100.h5", "cifar100", coarse)
    assert_holds(paths[0], {"train": expected(batches, ["train"], key),
                            "val": expected(batches, ["test"], key)}, classes)


def pickled(data, labels):
    return lambda original: pickle.dumps({b"data": data, b"labels": labels})


@pytest.mark.parametrize("name, damage, message", [
    ("data_batch_2", lambda original: None, "data_batch_2: missing CIFAR batch file"),
    ("data_batch_3", lambda original: original[:len(original) // 2],
     "data_batch_3: truncated or not a pickled CIFAR batch"),
    ("test_batch", lambda original: pickle.dumps({b"data": numpy.zeros((2, 3072), numpy.uint8)}),
     "test_batch: expected a dict with b'data' and b'labels'"),
    ("data_batch_1", pickled(numpy.zeros((2, 1024), numpy.uint8), [0, 1]),
     r"data_batch_1: b'data' must be uint8 \(n, 3072\), got uint8 \(2, 1024\)"),
    ("data_batch_4", pickled(numpy.zeros((2, 3072), numpy.uint8), [0]),
     "data_batch_4: 2 images but 1 labels"),
    ("data_batch_5", pickled(numpy.zeros((2, 3072), numpy.uint8), [0, 10]),
     r"data_batch_5: label 10 at index 1 is outside \[0, 10\)"),
])
def test_malformed_batches_are_named(cifar10, tmp_path, name, damage, message):
    folder, _ = cifar10
    contents = damage((folder / name).read_bytes())
    if contents is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(contents)
    with pytest.raises(ValueError, match=message):
        cifar.convert(folder, tmp_path / "c10.h5")
    assert list(tmp_path.glob("c10*")) == []  # nothing half-written is left behind


def test_archive_problems(cifar10, tmp_path):
    folder, _ = cifar10
    with pytest.raises(ValueError, match="no such directory or archive"):
        cifar.convert(tmp_path / "absent", tmp_path / "c10.h5")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar archive at all")
    with pytest.raises(ValueError, match="junk.tar.gz: not a readable CIFAR"):
        cifar.convert(tmp_path / "junk.tar.gz", tmp_path / "c10.h5")
    with tarfile.open(tmp_path / "partial.tar.gz", "w:gz") as tar:
        tar.add(folder / "data_batch_1", arcname="cifar-10-batches-py/data_batch_1")
    with pytest.raises(ValueError, match="the archive has no CIFAR batch 'data_batch_2'"):
        cifar.convert(tmp_path / "partial.tar.gz", tmp_path / "c10.h5")


class RunsShell:
    """What a hostile batch holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_hostile_pickle_is_refused_without_running_it(cifar10, tmp_path, protocol):
    source, _ = cifar10
    marker = tmp_path / "ran"
    with open(source / "data_batch_1", "wb") as f:
        pickle.dump({b"data": RunsShell(marker), b"labels": [0]}, f, protocol=protocol)
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR batch: it names "
                                         r"(posix|os)\.system, which no CIFAR batch holds"):
        cifar.convert(source, tmp_path / "out.h5")
    assert not marker.exists() and not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_of_any_pickle_protocol_still_convert(tmp_path, protocol):
    rng = numpy.random.default_rng(1)
    batches = {name: batch(rng, n, {b"labels": 10}) for name, n in CIFAR10.items()}
    folder = tmp_path / "batches"
    folder.mkdir()
    for name, contents in batches.items():
        (folder / name).write_bytes(pickle.dumps(contents, protocol=protocol))
    cifar.convert(folder, tmp_path / "out.h5")
    assert (tmp_path / "out.h5").exists()

import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from datasets import npz
from tests.datasets.readback import assert_holds, read_back

REPO = Path(__file__).resolve().parents[2]
rng = numpy.random.default_rng(0)
X = rng.integers(0, 256, (9, 3, 4, 5), dtype=numpy.uint8)
Y = rng.integers(0, 4, 9)
X_VAL = rng.integers(0, 256, (4, 3, 4, 5), dtype=numpy.uint8)
Y_VAL = numpy.array([3, 0, 1, 2], dtype=numpy.int32)


def test_nchw_with_val_compressed(tmp_path):
    numpy.savez_compressed(tmp_path / "a.npz", x=X, y=Y, x_val=X_VAL, y_val=Y_VAL)
    assert_holds(npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")[0],
                 {"train": (X, Y), "val": (X_VAL, Y_VAL.astype(numpy.int64))}, 4)


def test_channels_last_float_and_key_names(tmp_path):
    numpy.savez(tmp_path / "a.npz", images=X.transpose(0, 2, 3, 1) / 255.0, targets=Y)
    path = npz.convert(tmp_path / "a.npz", tmp_path / "a.h5", layout="nhwc",
                       num_classes=7, x_key="images", y_key="targets")[0]
    assert_holds(path, {"train": ((X / 255.0).astype(numpy.float32), Y)}, 7)


@pytest.mark.parametrize("shape, layout", [
    ((16, 16, 3), "nhwc"), ((3, 16, 16), "nchw"), ((28, 28, 1), "nhwc"), ((1, 28, 28), "nchw"),
    ((3, 4, 5), "nchw"), ((2, 8, 8), "nchw"), ((8, 8, 2), "nhwc"), ((32, 32, 4), "nhwc")])
def test_the_layout_is_detected(tmp_path, shape, layout):
    x = rng.integers(0, 256, (6,) + shape, dtype=numpy.uint8)
    numpy.savez(tmp_path / "a.npz", x=x, y=Y[:6])
    path = npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")[0]
    nchw = x.transpose(0, 3, 1, 2) if layout == "nhwc" else x
    assert_holds(path, {"train": (nchw, Y[:6])}, 4)


@pytest.mark.parametrize("shape", [(4, 4, 4), (3, 32, 3), (16, 16, 16)])
def test_an_ambiguous_layout_is_refused_until_given(tmp_path, shape):
    x = rng.integers(0, 256, (6,) + shape, dtype=numpy.uint8)
    numpy.savez(tmp_path / "a.npz", x=x, y=Y[:6])
    with pytest.raises(ValueError, match=r"a.npz:x has shape \(6, %d, %d, %d\): cannot tell "
                       r"\(N, C, H, W\) from \(N, H, W, C\); give the layout: --layout nchw "
                       r"or --layout nhwc" % shape):
        npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")
    path = npz.convert(tmp_path / "a.npz", tmp_path / "a.h5", layout="nhwc")[0]
    assert_holds(path, {"train": (x.transpose(0, 3, 1, 2), Y[:6])}, 4)


def test_grayscale_and_fortran_order(tmp_path):
    gray = numpy.asfortranarray(X[:, 0])  # stored column-major: read whole, not by rows
    numpy.savez(tmp_path / "a.npz", x=gray, y=Y)
    assert_holds(npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")[0],
                 {"train": (X[:, :1], Y)}, 4)


@pytest.mark.parametrize("arrays, message", [
    ({"x": X}, r"a.npz has no array 'y' \(it has \['x'\]\)"),
    ({"x": X, "y": Y, "x_val": X_VAL}, "has no array 'y_val'"),
    ({"x": X, "y": Y[:-1]}, r"a.npz:y has shape \(8,\); expected \(9,\)"),
    ({"x": X, "y": Y / 2}, "a.npz:y: labels must be integers, got float64"),
    ({"x": X, "y": Y - 1}, r"a.npz:y: label -1 at index \d+ is outside"),
    ({"x": X[:, 0, 0], "y": Y}, r"a.npz:x has shape \(9, 5\); samples must be"),
    ({"x": X[:0], "y": Y[:0]}, "with no empty axis"),
    ({"x": X.astype(str), "y": Y}, "a.npz:x: holds <U3 values; need numbers"),
    ({"x": X, "y": Y, "x_val": X_VAL[:, :1], "y_val": Y_VAL}, "differ in sample shape"),
    ({"x": X, "y": Y, "x_val": X_VAL / 1.0, "y_val": Y_VAL}, "differ in sample shape or type"),
])
def test_malformed_arrays(tmp_path, arrays, message):
    numpy.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(ValueError, match="absent.npz: no such file"):
        npz.convert(tmp_path / "absent.npz", tmp_path / "a.h5")
    numpy.savez(tmp_path / "a.npz", x=X, y=Y)
    whole = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "a.npz").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="a.npz: not a readable .npz archive"):
        npz.convert(tmp_path / "a.npz", tmp_path / "a.h5")


def test_command_line_entry_point(tmp_path):
    numpy.savez(tmp_path / "a.npz", x=X, y=Y, x_val=X_VAL, y_val=Y_VAL)
    run = subprocess.run([sys.executable, "-m", "datasets", "npz", str(tmp_path / "a.npz"),
                          "--out", str(tmp_path / "a.h5"), "--shards", "2",
                          "--compression", "lzf"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / f"a-0000{k}-of-00002.h5") for k in (0, 1)]
    x, y, _ = read_back(str(tmp_path / "a-*-of-00002.h5"), "val")
    numpy.testing.assert_array_equal(x, X_VAL)
    numpy.testing.assert_array_equal(y, Y_VAL)
    run = subprocess.run([sys.executable, "-m", "datasets", "npz", str(tmp_path / "absent.npz"),
                          "--out", str(tmp_path / "b.h5")], cwd=REPO, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("python -m datasets npz: error: ") and "no such file" in run.stderr


def declared_only(path, arrays):
    """An .npz whose members declare the given shapes in their .npy headers and hold a few
    bytes: what a zip of 3e8 compressed zeros looks like before it is read."""
    import io
    import zipfile
    from numpy.lib import format as npy
    with zipfile.ZipFile(path, "w") as archive:
        for key, (shape, dtype) in arrays.items():
            header = io.BytesIO()
            npy.write_array_header_1_0(header, {"descr": npy.dtype_to_descr(numpy.dtype(dtype)),
                                                "fortran_order": False, "shape": shape})
            archive.writestr(f"{key}.npy", header.getvalue() + b"\0" * 64)
    return path


def test_labels_beyond_the_free_memory_are_refused_before_they_are_read(tmp_path):
    count = 10**12
    path = declared_only(tmp_path / "bomb.npz", {"x": ((count, 1, 8, 8), numpy.uint8),
                                                 "y": ((count,), numpy.int64)})
    with pytest.raises(ValueError, match=r"bomb.npz:y declares 1000000000000 labels, 22351.7 "
                                         r"GiB to read and check, more than the .* GiB free"):
        npz.convert(path, tmp_path / "out.h5")


def test_what_the_trainer_would_refuse_is_not_written(tmp_path):
    rng = numpy.random.default_rng(0)
    x = rng.integers(0, 256, (8, 1, 4, 4), dtype=numpy.uint8)
    numpy.savez(tmp_path / "many.npz", x=x, y=numpy.array([0] * 7 + [10**12]))
    with pytest.raises(ValueError, match=r"num_classes must be in \[1, 1000000\], got "
                                         r"1000000000001"):
        npz.convert(tmp_path / "many.npz", tmp_path / "many.h5", layout="nchw")
    numpy.savez(tmp_path / "flat.npz", x=numpy.full((8, 1, 4, 4), 7, numpy.uint8),
                y=numpy.arange(8) % 2)
    with pytest.raises(ValueError, match=r"the train samples are constant in channel 0 "
                                         r"\(std 0\)"):
        npz.convert(tmp_path / "flat.npz", tmp_path / "flat.h5", layout="nchw")
    assert not list(tmp_path.glob("*.h5"))

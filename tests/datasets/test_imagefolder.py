"""The image-folder converter (datasets/imagefolder.py), on real PNG and BMP files."""
import numpy
import pytest

Image = pytest.importorskip("PIL.Image", reason="the convert extra's Pillow is not installed")

from datasets import imagefolder  # noqa: E402  (it imports Pillow)
from tests.datasets.readback import assert_holds, read_back  # noqa: E402

CLASSES = {"cat": 3, "dog": 2, "emu": 4}  # images per class
HEIGHT, WIDTH = 6, 5  # not square, so that a swapped H and W shows


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    """root/<class>/<k>.png (one .bmp, one upper-case .PNG), RGB; returns root and the expected
    (x (N, 3, H, W), y) in sorted (class, file name) order."""
    rng = numpy.random.default_rng(0)
    root, xs, ys = tmp_path / "images", [], []
    for label, (name, count) in enumerate(sorted(CLASSES.items())):
        for k in range(count):
            pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=numpy.uint8)
            suffix = {0: ".bmp", 1: ".PNG"}.get(k + label, ".png")
            save(root / name / f"{k}{suffix}", pixels)
            xs.append(pixels.transpose(2, 0, 1))
            ys.append(label)
    (root / "cat" / "notes.txt").write_text("not an image: skipped")
    return root, numpy.stack(xs), numpy.array(ys, dtype=numpy.int64)


def test_round_trip_without_validation(folder, tmp_path):
    root, x, y = folder
    path = imagefolder.convert(root, tmp_path / "f.h5", val_fraction=0)[0]
    assert_holds(path, {"train": (x, y)}, len(CLASSES))
    assert read_back(path, "train")[2].class_names == sorted(CLASSES)


def test_val_fraction_splits_the_files_by_seed(folder, tmp_path):
    root, x, y = folder
    held_out = []
    for seed in (0, 0, 1):
        path = imagefolder.convert(root, tmp_path / "f.h5", val_fraction=0.4, seed=seed)[0]
        found = {}
        for split in ("train", "val"):
            images, labels, _ = read_back(path, split)
            found[split] = [int(numpy.flatnonzero((x == image).all(axis=(1, 2, 3)))[0])
                            for image in images]  # each image's index in the folder
            numpy.testing.assert_array_equal(labels, y[found[split]])
            assert found[split] == sorted(found[split])  # each split keeps the folder order
        assert len(found["val"]) == 4 and sorted(found["train"] + found["val"]) == list(range(9))
        held_out.append(found["val"])
    assert held_out[0] == held_out[1] != held_out[2]


def test_val_root_grayscale_and_resize(folder, tmp_path):
    root, x, y = folder
    save(tmp_path / "val" / "dog" / "a.png", numpy.full((9, 11), 7, dtype=numpy.uint8))
    save(tmp_path / "val" / "emu" / "b.jpg", numpy.full((3, 3, 3), 200, dtype=numpy.uint8))
    path = imagefolder.convert(root, tmp_path / "f.h5", grayscale=True, size=(4, 7),
                               val_root=tmp_path / "val")[0]
    train_x, train_y, data = read_back(path, "train")
    val_x, val_y, _ = read_back(path, "val")
    assert train_x.shape == (len(x), 1, 4, 7) and val_x.shape == (2, 1, 4, 7)
    numpy.testing.assert_array_equal(train_y, y)
    numpy.testing.assert_array_equal(val_y, [1, 2])
    assert (val_x[0] == 7).all() and abs(int(val_x[1].mean()) - 200) <= 2  # JPEG is lossy
    assert data.mean.shape == (1,)


def test_grayscale_pixels_are_exact(tmp_path):
    gray = numpy.arange(30, dtype=numpy.uint8).reshape(HEIGHT, WIDTH)
    save(tmp_path / "g" / "only" / "a.png", gray)
    path = imagefolder.convert(tmp_path / "g", tmp_path / "f.h5", grayscale=True, val_fraction=0)
    assert_holds(path[0], {"train": (gray[None, None], numpy.array([0]))}, 1)


def test_mixed_sizes_name_the_file(folder, tmp_path):
    root, _, _ = folder
    save(root / "dog" / "big.png", numpy.zeros((HEIGHT + 1, WIDTH, 3), dtype=numpy.uint8))
    with pytest.raises(ValueError, match=r"dog/big.png: 7x5 pixels, but .*cat/0.bmp has 6x5; "
                                         r"images must share one size \(or pass --size H W"):
        imagefolder.convert(root, tmp_path / "f.h5", val_fraction=0)
    assert list(tmp_path.glob("f*")) == []  # nothing half-written is left behind


def test_malformed_folders(folder, tmp_path):
    root, _, _ = folder
    out = tmp_path / "f.h5"
    with pytest.raises(ValueError, match="absent: no such directory"):
        imagefolder.convert(tmp_path / "absent", out)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="flat: no class sub-folders"):
        imagefolder.convert(tmp_path / "flat", out)
    save(tmp_path / "val" / "yak" / "a.png", numpy.zeros((2, 2), dtype=numpy.uint8))
    with pytest.raises(ValueError, match=r"val: class folders \['yak'\] are not among"):
        imagefolder.convert(root, out, val_root=tmp_path / "val")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        imagefolder.convert(root, out, val_fraction=1)
    (root / "emu" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing sensible")
    with pytest.raises(ValueError, match="emu/broken.png: cannot decode the image"):
        imagefolder.convert(root, out)
    (root / "fox").mkdir()
    with pytest.raises(ValueError, match="fox: empty class folder"):
        imagefolder.convert(root, out)


def png_header(path, width, height):
    """A PNG that declares width x height 8-bit gray pixels in its header and holds none:
    what a decompression bomb shows before it is decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" +
                     chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, message", [
    (10_000, r"huge.png: 10000x10000 pixels, more than 40 million: too large to decode"),
    (50_000, r"huge.png: refused as a decompression bomb \(Image size \(2500000000 pixels\)"),
])
def test_an_image_too_large_is_refused_from_its_header(folder, tmp_path, side, message):
    root, _, _ = folder
    png_header(root / "dog" / "huge.png", side, side)
    with pytest.raises(ValueError, match=message):
        imagefolder.convert(root, tmp_path / "f.h5", val_fraction=0, size=(8, 8))
    assert list(tmp_path.glob("f*")) == []

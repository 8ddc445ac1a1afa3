"""Image folders: root/<class name>/<image files> (png, jpg, jpeg, bmp, gif); the classes are
the sorted sub-folder names, label k for the k-th. Images are decoded with Pillow to RGB (or
grayscale) uint8, resized to `size` if given, else they must all share one size. Validation
data is a seeded random fraction of the files, or a separate root whose class folders are among
root's; each split keeps the sorted (class, file name) order. The class names are stored in the
file attribute `class_names`, in label order. Images are decoded a piece at a time.
"""
import os

import numpy
from PIL import Image

from .common import piece_samples, write

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def convert(root, out, grayscale=False, size=None, val_fraction=0.1, val_root=None, seed=0,
            **output):
    """Convert the image folder `root`; size: (H, W) to resize to; val_root: a folder for
    /val (else `val_fraction` of root's files, chosen with `seed`; 0 for no /val). output:
    DatasetWriter options. Returns the written paths."""
    classes, train = _scan(root)
    if val_root is not None:
        val = _scan(val_root, classes)[1]
    elif 0 <= val_fraction < 1:
        order = numpy.random.default_rng(seed).permutation(len(train))
        held_out = set(order[:round(len(train) * val_fraction)].tolist())
        val = [f for i, f in enumerate(train) if i in held_out]
        train = [f for i, f in enumerate(train) if i not in held_out]
    else:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not train:
        raise ValueError(f"{root}: all {len(val)} images went to validation; lower val_fraction")
    mode = "L" if grayscale else "RGB"
    reference = train[0][0]  # the file whose size every other image must share
    shape = _decode(reference, mode, size).shape
    splits = {name: (len(files), _blocks(files, mode, size, shape, reference))
              for name, files in (("train", train), ("val", val)) if files}
    source = f"image folder {root}" + (f" (val: {val_root})" if val_root is not None else "")
    return write(out, len(classes), shape, numpy.uint8, splits, source,
                 attrs={"class_names": classes}, **output)


def _scan(root, classes=None):
    """(class names, [(file, label)] sorted by class, then file name) of an image folder;
    labels follow `classes` when given (a validation folder uses the training classes)."""
    if not os.path.isdir(root):
        raise ValueError(f"{root}: no such directory")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<class name>/<images>)")
    classes = classes or names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise ValueError(f"{root}: class folders {unknown} are not among the training classes")
    files = []
    for name in names:
        folder = os.path.join(root, name)
        images = sorted(e.name for e in os.scandir(folder)
                        if e.is_file() and e.name.lower().endswith(EXTENSIONS))
        if not images:
            raise ValueError(f"{folder}: empty class folder (no {'/'.join(EXTENSIONS)} files)")
        files += [(os.path.join(folder, image), classes.index(name)) for image in images]
    return classes, files


MAX_PIXELS = 40_000_000  # 160 MB decoded as RGBA: a bigger image is refused from its header


def _decode(path, mode, size, reference=None):
    """The image at `path` as a (C, H, W) uint8 array in `mode`, resized to size (H, W).
    Its header is read first: an image of more than MAX_PIXELS, or (with `reference`, the
    (file, (H, W)) that all must share) of another size, is refused before it is decoded."""
    try:
        opened = Image.open(path)  # its header only
    except Image.DecompressionBombError as error:  # a header claiming billions of pixels
        raise ValueError(f"{path}: refused as a decompression bomb ({error})") from None
    except (OSError, ValueError) as error:  # Pillow: unknown format, damaged or truncated
        raise ValueError(f"{path}: cannot decode the image ({error})") from None
    with opened:
        width, height = opened.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"{path}: {width}x{height} pixels, more than "
                             f"{MAX_PIXELS // 10**6} million: too large to decode")
        if reference is not None and size is None and (height, width) != reference[1]:
            raise ValueError(f"{path}: {height}x{width} pixels, but {reference[0]} has "
                             f"{reference[1][0]}x{reference[1][1]}; images must share one "
                             "size (or pass --size H W to resize them)")
        try:
            image = opened.convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = numpy.asarray(image)
        except (OSError, ValueError) as error:  # damaged or truncated pixel data
            raise ValueError(f"{path}: cannot decode the image ({error})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _blocks(files, mode, size, shape, reference):
    """(x, y) pieces of decoded images, every image checked against the reference's shape."""
    step = piece_samples(int(numpy.prod(shape)))
    for start in range(0, len(files), step):
        part = files[start:start + step]
        x = numpy.empty((len(part),) + shape, dtype=numpy.uint8)
        for i, (path, _) in enumerate(part):
            x[i] = _decode(path, mode, size, (reference, shape[1:]))
        yield x, numpy.array([label for _, label in part], dtype=numpy.int64)

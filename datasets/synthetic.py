"""A synthetic, learnable data set of any size, for scale and speed tests.

Each class has a fixed random smooth template (a coarse 4x4 random grid per channel, bilinearly
upsampled to H x W). A sample is its class template, circularly shifted by up to H/16 and W/16
pixels, scaled by a random contrast in [0.5, 1.5], plus uniform noise, then mapped to [0, 1]
(float32) or [0, 255] (uint8) and clipped. Labels are balanced (every class appears once in
each run of `classes` samples, shuffled within a piece). Everything is a function of the seed.
Samples are made and written a piece at a time (PIECE_BYTES of stored samples; the float32
working arrays are a few times that), so memory does not grow with the file.
"""
import numpy

from .common import piece_samples, write

COARSE = 4  # template grid before upsampling: sets how smooth the templates are
CONTRAST = (0.5, 1.5)


def convert(out, samples, shape=(3, 32, 32), classes=10, dtype="uint8", seed=0,
            val_samples=None, noise=0.5, **output):
    """Write `samples` training and `val_samples` validation samples (default: a fifth as
    many, at least 1; 0: no /val split) of `shape` (C, H, W) and `dtype` (uint8 or float32);
    noise: its std, relative to the templates' std of 1. output: DatasetWriter options.
    Returns the written paths."""
    shape, dtype = tuple(shape), numpy.dtype(dtype)
    if val_samples is None:
        val_samples = max(1, samples // 5)
    if len(shape) != 3 or min(shape) < 1 or min(samples, classes) < 1 or val_samples < 0:
        raise ValueError(f"need a (C, H, W) shape of positive sizes, samples and classes >= 1 "
                         f"and val_samples >= 0, got shape {shape}, {samples} samples, "
                         f"{classes} classes, {val_samples} val samples")
    template_seed, train_seed, val_seed = numpy.random.SeedSequence(seed).spawn(3)
    templates = _templates(numpy.random.default_rng(template_seed), classes, shape)
    streams = {"train": (samples, train_seed), "val": (val_samples, val_seed)}
    splits = {split: (count, _blocks(templates, numpy.random.default_rng(seq), count, noise,
                                     dtype))
              for split, (count, seq) in streams.items() if split == "train" or count}
    source = (f"synthetic: {classes} classes of smooth templates {shape}, shift, contrast "
              f"{CONTRAST}, noise {noise}, seed {seed}")
    return write(out, classes, shape, dtype, splits, source, **output)


def _upsampling(size):
    """(size, coarse) matrix of bilinear interpolation from the coarse grid to `size` points."""
    coarse = min(COARSE, size)
    points = numpy.linspace(0, coarse - 1, size)
    return numpy.stack([numpy.interp(points, numpy.arange(coarse), unit)
                        for unit in numpy.eye(coarse)], axis=1)


def _templates(rng, classes, shape):
    """(classes, C, H, W) float32 smooth random patterns, each of mean 0 and std 1."""
    channels, height, width = shape
    rows, cols = _upsampling(height), _upsampling(width)
    grid = rng.standard_normal((classes, channels, rows.shape[1], cols.shape[1]))
    templates = rows @ grid @ cols.T
    templates -= templates.mean(axis=(1, 2, 3), keepdims=True)
    templates /= templates.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return templates.astype(numpy.float32)


def _shifted(templates, labels, rng, reach):
    """The templates of `labels`, each circularly shifted by a random offset within reach."""
    shifts = numpy.stack([rng.integers(-r, r + 1, size=len(labels)) for r in reach], axis=1)
    x = numpy.empty((len(labels),) + templates.shape[1:], dtype=numpy.float32)
    for shift in numpy.unique(shifts, axis=0):  # few distinct shifts: roll each group at once
        group = numpy.flatnonzero((shifts == shift).all(axis=1))
        x[group] = numpy.roll(templates[labels[group]], tuple(shift), axis=(2, 3))
    return x


def _blocks(templates, rng, count, noise, dtype):
    """(x, y) pieces of `count` samples drawn from the class templates."""
    classes, channels, height, width = templates.shape
    reach = (height // 16, width // 16)  # the largest shift along each axis
    top = 255 if dtype == numpy.uint8 else 1
    step = piece_samples(dtype.itemsize * channels * height * width)
    for start in range(0, count, step):
        n = min(step, count - start)
        y = rng.permutation((start + numpy.arange(n)) % classes)
        x = _shifted(templates, y, rng, reach)
        x *= rng.uniform(*CONTRAST, size=(n, 1, 1, 1)).astype(numpy.float32)
        # uniform noise of std `noise`: much cheaper to draw than Gaussian noise
        x += (rng.random(x.shape, dtype=numpy.float32) - 0.5) * numpy.float32(noise * 12 ** 0.5)
        x *= numpy.float32(0.15 * top)  # +-3.3 template stds span the range...
        x += numpy.float32(0.5 * top)  # ...centred in it
        numpy.clip(x, 0, top, out=x)
        if dtype == numpy.uint8:
            numpy.rint(x, out=x)
        yield x.astype(dtype, copy=False), y

"""Batched data augmentation on the device: one code path for NumPy (CPU) and CuPy (GPU).

Every op transforms a whole batch x: (N, C, H, W) at once into a new array of the same shape and
dtype (x is never modified), each sample with probability p. Per-sample parameters are drawn on
the host from a numpy Generator (one key, the same parameters on CPU and GPU) and moved to the
device as small arrays; only noise is drawn on the device, seeded by the host generator. The
taper multiplies every op's strength (padding, degrees, amount, brightness, contrast, std, size;
integers rounded down; Flip's p) by `Augmenter.strength(epoch)`: at 0 every op is the identity.
"""
import inspect

import numpy

from .. import backend

MAX_SCALE = 0.99  # a zoom out by 1 or more would leave nothing of the image


def _check_range(name, value, low, high=float("inf"), integer=False):
    if integer and int(value) != value or not low <= value <= high:
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in "
                         f"[{low}, {high}], got {value!r}")
    return int(value) if integer else float(value)


def _plus_minus(rng, n, half_width):
    """(n,) host draws uniform in [-half_width, half_width]; n draws whatever the width."""
    return rng.uniform(-1.0, 1.0, n) * half_width


def _on_chosen(x, chosen, transform):
    """A copy of x: (N, ...) with transform ((M, ...) -> (M, ...)) applied to the samples where
    the host mask chosen (N,) is True; the others stay exactly as they are."""
    out = x.copy()
    if chosen.any():
        idx = backend.get_array_module(x).asarray(numpy.flatnonzero(chosen))
        out[idx] = transform(x[idx])
    return out


class Op:
    """`op(x, rng, strength)` = `op.apply(x, op.draw(rng, x.shape, strength))`.
    `draw` returns host arrays of per-sample parameters (tests read them back from the same
    generator) and uses a fixed number of draws whatever the strength, so tapering one op
    leaves the random stream of the ops after it unchanged."""

    def __init__(self, p):
        self.p = _check_range("p", p, 0.0, 1.0)

    def __call__(self, x, rng, strength=1.0):
        return self.apply(x, self.draw(rng, x.shape, strength))


class Flip(Op):
    """Mirror left-right. Flip has no magnitude, so the taper scales its probability:
    p * strength (at strength 0 nothing flips)."""

    def __init__(self, p=0.5):
        super().__init__(p)

    def draw(self, rng, shape, strength=1.0):
        return {"chosen": rng.random(shape[0]) < self.p * strength}

    def apply(self, x, params):
        return _on_chosen(x, params["chosen"], lambda chosen_x: chosen_x[:, :, :, ::-1])


class Crop(Op):
    """Pad by `padding` zeros on each side, crop H x W back: the content moves by (dy, dx),
    each an integer uniform in [-padding, padding] (0 where the sample is not chosen)."""

    def __init__(self, padding=4, p=1.0):
        super().__init__(p)
        self.padding = _check_range("padding", padding, 0, integer=True)

    def draw(self, rng, shape, strength=1.0):
        chosen = rng.random(shape[0]) < self.p
        pad = int(self.padding * strength)  # floor: strength >= 0
        shifts = numpy.floor(rng.random((2, shape[0])) * (2 * pad + 1)).astype(numpy.int64) - pad
        return {"padding": pad, "dy": shifts[0] * chosen, "dx": shifts[1] * chosen}

    def apply(self, x, params):
        pad, (n, c, h, w) = params["padding"], x.shape
        if pad == 0:
            return x.copy()
        xp = backend.get_array_module(x)
        padded = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
        padded[:, :, pad:pad + h, pad:pad + w] = x
        # All (2 pad + 1)^2 crop windows as one strided view (no copy); fancy indexing with
        # per-sample window offsets then copies one window per sample.
        windows = xp.lib.stride_tricks.as_strided(  # (N, C, 2 pad + 1, 2 pad + 1, H, W)
            padded, (n, c, 2 * pad + 1, 2 * pad + 1, h, w), padded.strides + padded.strides[2:])
        # The window starting at pad - dy shows x moved by +dy.
        top, left = (xp.asarray(pad - params[k]) for k in ("dy", "dx"))
        return windows[xp.arange(n), :, top, left]  # (N, C, H, W): advanced axes first


def affine_warp(x, inverse):
    """Bilinear warp about the image centre with zeros outside.
    x: (M, C, H, W); inverse: (M, 2, 2), maps an output pixel's offset from the centre (u right,
    v down) to the input offset it samples: (u_in, v_in) = inverse @ (u, v). -> (M, C, H, W)."""
    xp = backend.get_array_module(x)
    m, c, h, w = x.shape
    a = xp.asarray(inverse, dtype=x.dtype)[:, :, :, None, None]     # (M, 2, 2, 1, 1)
    u = xp.arange(w, dtype=x.dtype) - (w - 1) / 2                   # (W,)
    v = (xp.arange(h, dtype=x.dtype) - (h - 1) / 2)[:, None]        # (H, 1)
    src_x = a[:, 0, 0] * u + a[:, 0, 1] * v + (w - 1) / 2           # (M, H, W)
    src_y = a[:, 1, 0] * u + a[:, 1, 1] * v + (h - 1) / 2
    x0, y0 = xp.floor(src_x), xp.floor(src_y)
    fx, fy = src_x - x0, src_y - y0
    base = (xp.arange(m * c) * (h * w)).reshape(m, c, 1)  # where each (sample, channel) starts
    out = xp.zeros((m, c, h * w), dtype=x.dtype)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # the 4 bilinear taps
        xi, yi = x0 + dx, y0 + dy
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        weight *= (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)  # zeros outside
        pixel = xp.clip(yi, 0, h - 1) * w + xp.clip(xi, 0, w - 1)        # any in-range pixel
        # A flat take is ~3x faster than take_along_axis in NumPy.
        tap = xp.take(x.ravel(), base + pixel.astype(xp.int64).reshape(m, 1, h * w))
        out += tap * weight.reshape(m, 1, h * w)
    return out.reshape(m, c, h, w)


def _warp_chosen(x, chosen, inverse):
    """affine_warp of the chosen samples (host mask (N,), inverse (N, 2, 2)); the rest as is."""
    return _on_chosen(x, chosen, lambda chosen_x: affine_warp(chosen_x, inverse[chosen]))


class Rotate(Op):
    """Rotate by an angle uniform in [-degrees, degrees] about the centre (positive:
    counter-clockwise as displayed, row 0 at the top), bilinear, zeros outside."""

    def __init__(self, degrees=10.0, p=0.5):
        super().__init__(p)
        self.degrees = _check_range("degrees", degrees, 0.0, 180.0)

    def draw(self, rng, shape, strength=1.0):
        chosen = rng.random(shape[0]) < self.p
        return {"chosen": chosen, "degrees": _plus_minus(rng, shape[0], self.degrees * strength)}

    def apply(self, x, params):
        t = numpy.deg2rad(params["degrees"])
        cos, sin = numpy.cos(t), numpy.sin(t)
        inverse = numpy.stack([cos, -sin, sin, cos], -1).reshape(-1, 2, 2)
        return _warp_chosen(x, params["chosen"] & (t != 0), inverse)


class Scale(Op):
    """Zoom by a factor uniform in [1 - amount, 1 + amount] about the centre (> 1 enlarges:
    content moves radially outwards by the factor), bilinear, zeros outside."""

    def __init__(self, amount=0.1, p=0.5):
        super().__init__(p)
        self.amount = _check_range("amount", amount, 0.0, MAX_SCALE)

    def draw(self, rng, shape, strength=1.0):
        chosen = rng.random(shape[0]) < self.p
        factor = 1.0 + _plus_minus(rng, shape[0], self.amount * strength)
        return {"chosen": chosen, "factor": factor}

    def apply(self, x, params):
        inverse = numpy.eye(2) / params["factor"][:, None, None]
        return _warp_chosen(x, params["chosen"] & (params["factor"] != 1), inverse)


class BrightnessContrast(Op):
    """x -> (x - mean) * c + mean + b, mean over each image's (C, H, W); c uniform in [1 -
    contrast, 1 + contrast], b in [-brightness, brightness]; c = 1, b = 0 where not chosen."""

    def __init__(self, brightness=0.2, contrast=0.2, p=0.5):
        super().__init__(p)
        self.brightness = _check_range("brightness", brightness, 0.0)
        self.contrast = _check_range("contrast", contrast, 0.0, 1.0)

    def draw(self, rng, shape, strength=1.0):
        chosen = rng.random(shape[0]) < self.p
        contrast = 1.0 + _plus_minus(rng, shape[0], self.contrast * strength) * chosen
        brightness = _plus_minus(rng, shape[0], self.brightness * strength) * chosen
        return {"contrast": contrast, "brightness": brightness}

    def apply(self, x, params):
        xp = backend.get_array_module(x)
        c, b = (xp.asarray(params[k], dtype=x.dtype)[:, None, None, None]
                for k in ("contrast", "brightness"))
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        # The same formula rearranged so that c = 1, b = 0 gives x exactly.
        return x * c + (mean * (1 - c) + b)


class Noise(Op):
    """Add Gaussian noise of standard deviation std, drawn on the device."""

    def __init__(self, std=0.05, p=0.5):
        super().__init__(p)
        self.std = _check_range("std", std, 0.0)

    def draw(self, rng, shape, strength=1.0):
        chosen = rng.random(shape[0]) < self.p
        return {"chosen": chosen, "std": self.std * strength, "seed": int(rng.integers(2**63))}

    def apply(self, x, params):
        def add_noise(chosen_x):  # noise only for the chosen samples: drawing it is the cost
            return chosen_x + params["std"] * _standard_normal(params["seed"], chosen_x)
        return _on_chosen(x, params["chosen"] & (params["std"] > 0), add_noise)


def _standard_normal(seed, like):
    """Normal draws shaped like `like`, on its device: Box-Muller on xp.random.default_rng(seed),
    ~3x faster on the CPU than standard_normal; tails end at 5.8 sigma in float32."""
    xp = backend.get_array_module(like)
    u = xp.random.default_rng(seed).random((2, (like.size + 1) // 2), dtype=like.dtype)
    # u < 1 keeps the log finite (a float32 draw may be a double rounded up to 1 on some devices).
    xp.minimum(u[0], numpy.nextafter(1, 0, dtype=like.dtype), out=u[0])
    radius = xp.sqrt(-2 * xp.log1p(-u[0]))
    angle = (2 * numpy.pi) * u[1]
    z = xp.concatenate([xp.cos(angle), xp.sin(angle)])
    z *= xp.concatenate([radius, radius])
    return z[:like.size].reshape(like.shape)


class Cutout(Op):
    """Zero a size x size square (clipped at the borders) whose centre is a uniformly random
    pixel: rows top .. top + size - 1 with top = centre_row - size // 2, likewise columns."""

    def __init__(self, size=8, p=0.5):
        super().__init__(p)
        self.size = _check_range("size", size, 0, integer=True)

    def draw(self, rng, shape, strength=1.0):
        n, _, h, w = shape
        chosen = rng.random(n) < self.p
        size = int(self.size * strength) * chosen  # floor; 0 where not chosen
        centre = numpy.floor(rng.random((2, n)) * [[h], [w]]).astype(numpy.int64)
        return {"size": size, "top": centre[0] - size // 2, "left": centre[1] - size // 2}

    def apply(self, x, params):
        xp = backend.get_array_module(x)
        size, top, left = (xp.asarray(params[k])[:, None] for k in ("size", "top", "left"))
        rows, cols = xp.arange(x.shape[2]), xp.arange(x.shape[3])
        hole = (((rows >= top) & (rows < top + size))[:, :, None]          # (N, H, 1)
                & ((cols >= left) & (cols < left + size))[:, None, :])     # (N, 1, W)
        return x * (1 - hole.astype(x.dtype))[:, None]  # a 0/1 multiply: cheaper than where


class Augmenter:
    """Applies ops in order: x: (N, C, H, W) float array (normalised) -> a new array of the same
    shape and dtype (labels are not its business). The random parameters come from `key` (e.g.
    (seed, rank, epoch, step)) alone. Over the last `taper_epochs` of `epochs` every op's
    strength falls linearly to 0 at the last epoch, where the whole pipeline is the identity."""

    def __init__(self, ops, taper_epochs=0, epochs=None):
        self.ops = list(ops)
        self.taper_epochs = _check_range("taper_epochs", taper_epochs, 0, integer=True)
        if self.taper_epochs > 0 and epochs is None:
            raise ValueError("taper_epochs > 0 needs epochs (the length of training)")
        self.epochs = None if epochs is None else _check_range("epochs", epochs, 1, integer=True)

    def strength(self, epoch):
        """1.0, or (epochs - 1 - epoch) / taper_epochs clipped to [0, 1] when tapering:
        e.g. taper_epochs=2, epochs=10 gives 1, ..., 1, 0.5, 0 for epochs 0..9."""
        if self.taper_epochs == 0:
            return 1.0
        return min(1.0, max(0.0, (self.epochs - 1 - epoch) / self.taper_epochs))

    def __call__(self, x, key, epoch=0):
        rng = numpy.random.default_rng(numpy.random.SeedSequence(key))
        strength = self.strength(epoch)
        out = x if self.ops else x.copy()
        for op in self.ops:
            out = op(out, rng, strength)
        return out


OPS = {"flip": Flip, "crop": Crop, "rotate": Rotate, "scale": Scale,
       "brightness_contrast": BrightnessContrast, "noise": Noise, "cutout": Cutout}


def from_config(config, taper_epochs=0, epochs=None):
    """{"flip": {"p": 0.5}, "crop": {"padding": 4}, ...} -> Augmenter with the ops in that
    order; an empty config gives an Augmenter that returns a copy of x."""
    ops = []
    for name, kwargs in config.items():
        if name not in OPS:
            raise ValueError(f"unknown augmentation {name!r}; valid choices: {', '.join(OPS)}")
        kwargs = dict(kwargs or {})
        valid = list(inspect.signature(OPS[name]).parameters)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"augmentation {name!r} got unknown argument(s) {', '.join(unknown)}; "
                             f"valid choices: {', '.join(valid)}")
        ops.append(OPS[name](**kwargs))
    return Augmenter(ops, taper_epochs, epochs)

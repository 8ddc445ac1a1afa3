"""Inverted dropout: zero each element with probability p in training, scale the rest by
1 / (1 - p) so that evaluation needs no rescaling (torch.nn.Dropout)."""
from .. import backend
from .module import Module


class Dropout(Module):
    """x: any shape -> same shape. Masks come from the per-rank "dropout" random stream
    (or the Generator passed as `rng`)."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p, self.rng = p, rng

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.scaled_mask = None
            return x
        rng = self.rng if self.rng is not None else backend.generator("dropout")
        draw = x.dtype if x.dtype.itemsize >= 4 else "float32"  # no half-precision draws
        keep = rng.random(x.shape, dtype=draw) >= self.p
        scaled_mask = keep.astype(x.dtype)
        scaled_mask *= 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        self.keep(scaled_mask=scaled_mask)
        return x * scaled_mask

    def backward(self, dy):
        return dy if self.scaled_mask is None else dy * self.scaled_mask

    def extra_repr(self):
        return f"p={self.p}"

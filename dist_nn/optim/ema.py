"""Exponential moving average of the weights (Polyak averaging, as timm's ModelEmaV3):
after each optimizer step, ema = decay * ema + (1 - decay) * weights, over the flat parameter
buffer (one vectorised update) and the model's float buffers (BatchNorm running statistics,
gathered into one vector); integer buffers (num_batches_tracked) are copied. Evaluating with
the averaged weights usually beats the last weights of a noisy run.
"""
import contextlib

from .. import backend


class WeightEMA:
    def __init__(self, model, flat, decay):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model, self.flat, self.decay = model, flat, decay
        self.xp = backend.get_array_module(flat.data)
        self.buffer_names = [name for name, b in model.named_buffers() if b.dtype.kind == "f"]
        self.params = flat.data.copy()
        self.buffers = self._live_buffers()

    def reset(self):
        """Start the average again from the current weights."""
        self.params[...] = self.flat.data
        self.buffers[...] = self._live_buffers()

    def _live(self):
        state = self.model.state_arrays()
        return [state[name] for name in self.buffer_names]

    def _live_buffers(self):
        live = self._live()
        return self.xp.concatenate([b.reshape(-1) for b in live]) if live else \
            self.xp.zeros(0, dtype=self.flat.data.dtype)

    def update(self):
        """Move the average toward the current weights (call after each optimizer step)."""
        for average, live in ((self.params, self.flat.data), (self.buffers, self._live_buffers())):
            average *= self.decay
            average += (1.0 - self.decay) * live

    def _write(self, params, buffers):
        """Copy values into the model's parameters and float buffers, in place."""
        self.flat.data[...] = params
        start = 0
        for b in self._live():
            b[...] = buffers[start:start + b.size].reshape(b.shape)
            start += b.size

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the with-block (for evaluation), its
        own weights again after it."""
        saved = self.flat.data.copy(), self._live_buffers()
        self._write(self.params, self.buffers)
        try:
            yield self.model
        finally:
            self._write(*saved)

    def state_dict(self):
        """The averaged weights as the model's state_dict() (PyTorch-style names)."""
        with self.applied():
            return self.model.state_dict()

    def load_state_dict(self, state):
        saved = self.flat.data.copy(), self._live_buffers()
        try:
            self.model.load_state_dict(state)
            self.params[...] = self.flat.data
            self.buffers[...] = self._live_buffers()
        finally:
            self._write(*saved)

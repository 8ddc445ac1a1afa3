"""Losses: forward(prediction, target) -> scalar mean, backward() -> d loss / d prediction.

`mean_over` (default: the local batch size) is the number of samples the summed loss is
divided by. Data-parallel training with uneven shards passes global batch / world size on
every rank: after the gradient allreduce averages over ranks, every rank then holds the
gradient of the mean over the global batch, whatever its own share of it.

Losses compute in at least float32: half-precision predictions (mixed precision) are cast up,
and backward returns d loss / d prediction in that compute dtype.
"""
from .. import backend
from .module import grad_enabled


def at_least_float32(x):
    """x, cast to float32 when it is a half-precision array (float16, bfloat16)."""
    return x.astype("float32") if x.dtype.itemsize < 4 else x


class SoftmaxCrossEntropy:
    """Mean of -log softmax(logits)[label], in the log-sum-exp form.
    logits: (N, C), target: (N,) integer labels in [0, C). As torch.nn.CrossEntropyLoss().

    label_smoothing=e: the target is (1 - e) one-hot + e / C, i.e. the loss is (1 - e) times
    the negative log-likelihood plus e times the mean of -log softmax over the classes
    (torch's `label_smoothing`)."""

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits, target, mean_over=None, check_labels=True):
        """check_labels=False: the caller vouches that every label lies in [0, C) (the
        Trainer's data were checked when opened): on a GPU the check reads the labels' range
        back to the host, a sync."""
        xp = backend.get_array_module(logits)
        if logits.ndim != 2 or target.shape != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropy expects logits (N, C) and labels (N,), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        n, c = logits.shape
        if check_labels:
            low, high = int(target.min()), int(target.max())
            if low < 0 or high >= c:
                raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got values "
                                 f"in [{low}, {high}]")
        logits = at_least_float32(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum_exp = xp.log(xp.exp(shifted).sum(axis=1))
        rows = xp.arange(n)
        if grad_enabled():  # the probabilities only serve backward
            self.probs = xp.exp(shifted - log_sum_exp[:, None])
        self.target, self.rows = target, rows
        self.scale = 1.0 / (n if mean_over is None else mean_over)
        e = self.label_smoothing
        # -sum_c q_c log p_c with log p_c = shifted_c - log_sum_exp and sum_c q_c = 1
        target_logit = shifted[rows, target] if e == 0 else \
            (1.0 - e) * shifted[rows, target] + e * shifted.mean(axis=1)
        return (log_sum_exp - target_logit).sum() * self.scale

    def backward(self):
        e = self.label_smoothing
        grad = self.probs - e / self.probs.shape[1] if e else self.probs.copy()
        grad[self.rows, self.target] -= 1.0 - e
        grad *= self.scale
        return grad


class MSELoss:
    """Mean over all elements of (prediction - target)^2, as torch.nn.MSELoss()."""

    def forward(self, prediction, target, mean_over=None):
        if prediction.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {tuple(prediction.shape)} and target "
                             f"{tuple(target.shape)} differ in shape")
        self.diff = at_least_float32(prediction) - target
        per_sample = self.diff[0].size
        self.scale = 1.0 / (self.diff.size if mean_over is None else mean_over * per_sample)
        return (self.diff * self.diff).sum() * self.scale

    def backward(self):
        return self.diff * (2.0 * self.scale)

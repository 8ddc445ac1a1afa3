"""Losses: forward(prediction, target) -> scalar mean, backward() -> d loss / d prediction.

`mean_over` (default: the local batch size) is the number of samples the summed loss is
divided by. Data-parallel training with uneven shards passes global batch / world size on
every rank: after the gradient allreduce averages over ranks, every rank then holds the
gradient of the mean over the global batch, whatever its own share of it.
"""
from .. import backend


class SoftmaxCrossEntropy:
    """Mean of -log softmax(logits)[label], in the log-sum-exp form.
    logits: (N, C), target: (N,) integer labels in [0, C). As torch.nn.CrossEntropyLoss()."""

    def forward(self, logits, target, mean_over=None):
        xp = backend.get_array_module(logits)
        if logits.ndim != 2 or target.shape != (logits.shape[0],):
            raise ValueError(f"SoftmaxCrossEntropy expects logits (N, C) and labels (N,), got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        n, c = logits.shape
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= c:
            raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got values in "
                             f"[{low}, {high}]")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum_exp = xp.log(xp.exp(shifted).sum(axis=1))
        rows = xp.arange(n)
        self.probs = xp.exp(shifted - log_sum_exp[:, None])
        self.target, self.rows = target, rows
        self.scale = 1.0 / (n if mean_over is None else mean_over)
        return (log_sum_exp - shifted[rows, target]).sum() * self.scale

    def backward(self):
        grad = self.probs.copy()
        grad[self.rows, self.target] -= 1.0
        grad *= self.scale
        return grad


class MSELoss:
    """Mean over all elements of (prediction - target)^2, as torch.nn.MSELoss()."""

    def forward(self, prediction, target, mean_over=None):
        if prediction.shape != target.shape:
            raise ValueError(f"MSELoss: prediction {tuple(prediction.shape)} and target "
                             f"{tuple(target.shape)} differ in shape")
        self.diff = prediction - target
        per_sample = self.diff[0].size
        self.scale = 1.0 / (self.diff.size if mean_over is None else mean_over * per_sample)
        return (self.diff * self.diff).sum() * self.scale

    def backward(self):
        return self.diff * (2.0 * self.scale)

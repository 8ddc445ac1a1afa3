"""GradSync: gradient allreduce in buckets, overlapped with backward.

The optimizer's flat gradient buffer is cut into buckets of about `bucket_mb` megabytes at
parameter boundaries. The buffer holds parameters in reverse registration order, so the
buckets fill roughly in the order backward produces gradients. A backward hook on every
module that owns trainable parameters marks them ready; once a bucket's parameters are all
ready its non-blocking allreduce starts (buckets start strictly in order 0, 1, 2, ..., the
same on every rank, which collective ordering requires). `wait()` starts what is left,
completes everything and divides by the world size: every rank then holds the gradient of
the global mean loss. Frozen parameters are not in the buffer and take no part.

With average=False the division is left out, saving a pass over the gradients: for losses
that are already each rank's share of the global mean (`loss.forward(..., mean_over=global
batch size)`), the sum is the gradient of the global mean loss.

ShardedGradSync (zero.py) is the ZeRO-1 counterpart: the same buckets and hooks, with a
reduce-scatter per bucket instead of an allreduce. A `compression` (compression.py) starts
each bucket's collective in fewer bytes and leaves the same synchronised gradient in place.
"""
import contextlib
import math

from ..optim import squared_norm


class GradSync:
    def __init__(self, model, flat, comm, bucket_mb=25.0, overlap=True, average=True,
                 compression=None):
        self.flat, self.comm, self.overlap, self.average = flat, comm, overlap, average
        self.buckets = self._cut(flat, bucket_mb)
        self.compression = compression if comm.size > 1 else None  # one rank sends nothing
        if self.compression is not None:
            self.compression.bind(self.buckets, flat)
        self.bucket_of = {id(p): b for b, (_, _, params) in enumerate(self.buckets)
                          for p in params}
        self.enabled = True
        self._reset()
        self.hooked = [m for _, m in model.named_modules()
                       if any(id(p) in self.bucket_of for _, p in m.own_parameters())]
        if comm.size > 1:
            for module in self.hooked:
                module.add_backward_hook(self._module_done)

    @staticmethod
    def _cut(flat, bucket_mb):
        """[(start, end, params)]: contiguous slices of the flat buffer."""
        limit = max(1, int(bucket_mb * 2**20 / flat.data.itemsize))
        buckets, params, start = [], [], 0
        for p, (begin, end) in zip(flat.params, flat.offsets):
            params.append(p)
            if end - start >= limit:
                buckets.append((start, end, params))
                params, start = [], end
        if params:
            buckets.append((start, flat.offsets[-1][1], params))
        return buckets

    def _reset(self):
        self.missing = [len(params) for _, _, params in self.buckets]
        self.handles = []  # one per started bucket, in bucket order

    def _module_done(self, module):
        if not (self.enabled and self.overlap):
            return
        for _, p in module.own_parameters():
            b = self.bucket_of.get(id(p))
            if b is not None:
                self.missing[b] -= 1
        self._start_ready()
        for handle in self.handles:  # MPI progresses non-blocking collectives when called
            handle.test()

    def _start_ready(self, all_buckets=False):
        """Start the allreduce of each next bucket in order while it is complete."""
        while len(self.handles) < len(self.buckets):
            b = len(self.handles)
            if self.missing[b] > 0 and not all_buckets:
                return
            self.handles.append(self._start(b))

    def _start(self, b):
        """Start bucket b's collective; its handle."""
        start, end, _ = self.buckets[b]
        if self.compression is not None:
            return self.compression.allreduce(self.comm, self.flat.grad[start:end], b)
        return self.comm.iallreduce(self.flat.grad[start:end])

    def wait(self):
        """Finish the allreduce of every bucket (and average): call after backward, before
        the optimizer step (not inside no_sync)."""
        if self.comm.size == 1:
            return
        self._start_ready(all_buckets=True)
        for handle in self.handles:
            handle.wait()
        if self.average:
            self.flat.grad *= 1.0 / self.comm.size
        self._reset()

    def squared_grad_norm(self):
        """The squared global L2 norm of the synchronised gradient (after wait()), the same on
        every rank, as a 0-d array (on a GPU: not read back): what clipping, the non-finite
        check and the metrics share (computed once per step, by optim.StepRecipe)."""
        return squared_norm(self.flat.grad)

    def grad_norm(self):
        return math.sqrt(float(self.squared_grad_norm()))

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate gradients (earlier micro-batches of a
        gradient-accumulation step); the next backward outside synchronises the sum."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True
            self._reset()

    def close(self):
        """Remove the backward hooks."""
        if self.comm.size > 1:
            for module in self.hooked:
                module.remove_backward_hook(self._module_done)


"""ZeRO-1: each rank keeps the optimizer state of its 1/N of the parameters only.

The flat gradient buffer is cut into the same buckets as GradSync's (parameter boundaries,
reverse registration order, so they fill in the order backward produces gradients). Each
bucket is reduce-scattered as soon as it is complete: rank r receives the sum of chunk r of
every bucket (`chunk_bounds`). Rank r's shard is therefore its chunk of bucket 0, then its
chunk of bucket 1, ..., packed into one contiguous array (`FlatShard`): the reduce-scatter of
a bucket writes straight into the shard's gradient, and the allgather after the step reads
straight from the shard's parameters, with no packing copies. Cutting the buffer instead into
N contiguous ranges would make the first buckets of backward all belong to rank 0: each
bucket would be a reduce to one rank (every other rank's link idle), and there would be no
balanced collective to overlap. With one bucket (small models) the shard is exactly the
contiguous 1/N of the flat buffer.

A step: backward reduce-scatters the buckets; `ShardedGradSync.wait()` completes them (and
averages the shard); `ShardedOptimizer.step()` copies the shard's current parameters out of
the model, runs the wrapped optimizer on the shard, and allgathers the updated parameters
bucket by bucket. Every optimizer works unchanged: their updates are elementwise, weight
decay and L1 follow the shard's decay mask. A global quantity of the gradient (the norm for
clipping, a non-finite check) is the shard's part plus one small allreduce:
`ShardedGradSync.grad_norm()`; so is fp16's overflow verdict (`all_finite`), which every
rank must share to skip the same steps. After the allgather the parameters are whole on
every rank: the weight EMA and autocast work on the full flat buffer as unsharded.

Checkpoints keep the unsharded format: `ShardedOptimizer.state_dict()` (called on every
rank) gathers the full state on rank 0; `load_state_dict()` takes the full state and keeps
this rank's shard, so a run resumes on any world size, sharded or not.
"""

import numpy

from .. import backend
from ..optim import FlatParameters, FlatShard, squared_norm
from .comm import chunk_bounds
from .grad_sync import GradSync


class ShardedGradSync(GradSync):
    """GradSync with a reduce-scatter per bucket: after wait(), `shard.grad` holds the
    (averaged) global gradient of this rank's shard; `flat.grad` is only the local one."""

    def __init__(self, model, flat, comm, bucket_mb=25.0, overlap=True, average=True,
                 compression=None):
        super().__init__(model, flat, comm, bucket_mb, overlap, average, compression)
        pieces = []
        for start, end, _ in self.buckets:  # this rank's chunk of every bucket
            begin, stop = chunk_bounds(end - start, comm.size)[comm.rank]
            pieces.append((start + begin, start + stop))
        self.shard = FlatShard(flat, pieces)

    def _start(self, b):
        start, end, _ = self.buckets[b]
        out = self.shard.grad[self.shard.slices[b]]
        if self.compression is not None:
            return self.compression.reduce_scatter(self.comm, self.flat.grad[start:end], out)
        return self.comm.ireduce_scatter(self.flat.grad[start:end], out)

    def wait(self):
        """Finish every bucket's reduce-scatter (and average the shard)."""
        self._start_ready(all_buckets=True)
        for handle in self.handles:
            handle.wait()
        if self.average and self.comm.size > 1:
            self.shard.grad *= 1.0 / self.comm.size
        self._reset()

    def squared_grad_norm(self):
        """The squared L2 norm of the whole synchronised gradient (the same on every rank),
        as a 0-d array on the gradient's device: the shard's part and one allreduce. A
        non-finite value on any rank makes it non-finite on all (fp16's overflow verdict)."""
        total = squared_norm(self.shard.grad).reshape(1)
        self.comm.allreduce(total)
        return total.reshape(())

    def gather_parameters(self):
        """Every rank's updated shard into every rank's model."""
        handles = [self.comm.iallgather(self.shard.data[part], self.flat.data[start:end])
                   for (start, end, _), part in zip(self.buckets, self.shard.slices)]
        for handle in handles:
            handle.wait()

    def gather(self, values):
        """A shard-shaped vector's full flat-layout version on rank 0 (a host array; None on
        the other ranks), one bucket at a time: no other rank holds more than a bucket."""
        xp = backend.get_array_module(values)
        full = xp.empty(self.flat.size, values.dtype) if self.comm.rank == 0 else None
        scratch = None if full is not None else \
            xp.empty(max(end - start for start, end, _ in self.buckets), values.dtype)
        for (start, end, _), part in zip(self.buckets, self.shard.slices):
            into = full[start:end] if full is not None else scratch[:end - start]
            self.comm.allgather(values[part], into)
        return None if full is None else backend.to_host(full)


class ShardedOptimizer:
    """An optimizer built on `sync.shard`, made to look like an unsharded one: step() updates
    this rank's shard and allgathers the parameters, zero_grad() clears the model's whole
    gradient buffer, state_dict()/load_state_dict() read and write the full state. Every other
    attribute (lr, momentum, betas, step_count, ... that schedules set) is the optimizer's."""

    def __init__(self, optimizer, sync):
        if optimizer.flat is not sync.shard:
            raise ValueError("the optimizer must be built on the sync's shard (sync.shard)")
        vars(self).update(optimizer=optimizer, sync=sync)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def zero_grad(self):
        self.sync.flat.grad.fill(0)

    def step(self):
        self.sync.shard.load()  # parameters may have changed since (broadcast, restore)
        self.optimizer.step()
        self.sync.gather_parameters()

    def state_dict(self):
        """The unsharded optimizer's state_dict() on rank 0, None elsewhere: a collective,
        every rank calls it."""
        state = {k: v for k, v in self.optimizer.state_dict().items() if k != "buffers"}
        buffers = {name: self.sync.gather(self.optimizer.buffers[name])
                   for name in sorted(self.optimizer.buffers)}
        return {**state, "buffers": buffers} if self.sync.comm.rank == 0 else None

    def load_state_dict(self, state):
        """Load an unsharded (full) state, e.g. a checkpoint's, keeping this rank's shard."""
        flat = self.sync.flat
        for name, value in state["buffers"].items():
            if value.shape != flat.data.shape:
                raise ValueError(f"optimizer state {name!r} holds {value.shape[0]} values but "
                                 f"the model has {flat.size} trainable parameters")
        shard = self.sync.shard
        self.optimizer.load_state_dict({**state, "buffers": {
            name: shard.take(numpy.asarray(value)) for name, value in state["buffers"].items()}})


def sharded(make_optimizer, model, comm, bucket_mb=25.0, overlap=True, average=True,
            compression=None):
    """(ShardedOptimizer, ShardedGradSync) for a model: `make_optimizer(params)` builds the
    optimizer (any of optim's) on the shard it is given."""
    sync = ShardedGradSync(model, FlatParameters(model.parameters()), comm, bucket_mb,
                           overlap, average, compression)
    return ShardedOptimizer(make_optimizer(sync.shard), sync), sync

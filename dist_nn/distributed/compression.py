"""Gradient compression of the bucket collectives (`train.grad_compression`).

Each compressor starts a bucket's collective and returns a handle whose wait() leaves the
bucket's synchronised gradient in place, as the plain collective would:

- `Cast("fp16" | "bf16")`: the bucket is cast to 16 bits for the collective and back (half
  the bytes), as PyTorch DDP's fp16/bf16 compress hooks do; in fp16 scaled by a power of two
  per bucket first (Cast's docstring). MPI adds each pair in float32 (comm.py); NCCL sums
  natively. An fp16 sum beyond 65504 is Inf: the trainer skips that step on every rank (the
  synchronised gradient is the same everywhere), as fp16 mixed precision does. Allreduce and
  ZeRO-1's reduce-scatter alike.
- `PowerSGD(rank)` (Vogels, Karimireddy and Jaggi, NeurIPS 2019, with PyTorch's
  powerSGD_hook's choices): every gradient of two or more dimensions (a conv weight as
  out x in*k*k) whose rank-r factors are at most half its size is sent as two thin matrices:
  with M = the local gradient + this rank's error feedback,
      P = M Q;  P <- sum over ranks;  P <- orthonormal(P);  Q = M^T P;  Q <- sum over ranks;
      gradient = P Q^T;  error = M - P Q^T / N
  Q is kept for the next step (warm start); vectors and small matrices travel uncompressed
  in the same message as P. Bytes per step: r (rows + cols) instead of rows x cols per
  matrix. Allreduce only (ZeRO-1 is refused by the config).

The gradient sync works in sums of each rank's share of the global mean (GradSync with
average=False), so "sum over ranks" is the synchronised gradient; the error keeps this
rank's 1/N share of what the approximation left out. PowerSGD's Q and every rank's error, and fp16's scales,
are state: `state_dict()` (called on every rank; rank 0 receives all errors) and
`load_state_dict()` make a resume exact; on another world size the errors start from zero.
"""
import zlib

import numpy

from .. import backend, saved
from ..nn import amp

NAMES = ("none", "fp16", "bf16", "powersgd")
MIN_COMPRESSION = 2  # a matrix is compressed when its factors take at most 1/2 of its size


def make(name, rank=4, seed=0):
    """The compressor for `name` (None for "none"); PrecisionError when the backend has no
    such 16-bit type (bf16 on NumPy without ml_dtypes)."""
    if name == "none":
        return None
    if name in ("fp16", "bf16"):
        return Cast(name)
    return PowerSGD(rank, seed)


class _Then:
    """A pending collective followed, once complete, by `finish()`."""

    def __init__(self, handle, finish):
        self.handle, self.finish = handle, finish

    def test(self):
        return self.handle.test()

    def wait(self):
        self.handle.wait()
        self.finish()


class Cast:
    """Buckets cast to float16 or bfloat16 for their collective. In float16 an allreduced
    bucket is first multiplied by a power of two, `scales[bucket]`, that brings its largest
    synchronised value of the step before to about SCALED_MAX (then divided back exactly):
    gradients of a mean loss lie mostly below float16's smallest normal number (6.1e-5), where
    it keeps few bits, rounds below 6e-8 to zero, and NumPy converts element by element, 30x
    slower. The scales follow the synchronised gradient, the same on every rank, and are saved
    with the checkpoint; an overflow (Inf: the step is skipped) divides a scale by 16. The
    reduce-scatter of ZeRO-1 leaves every rank a different shard to measure: unscaled."""

    def __init__(self, mode):
        self.mode = mode
        self.dtype = amp.half_dtype(mode)
        self.scales = None

    def bind(self, buckets, flat):
        self.values = flat.grad.size
        if self.mode == "fp16":
            self.scales = backend.get_array_module(flat.grad).ones(len(buckets),
                                                                   flat.grad.dtype)

    def bytes_sent(self):
        """Bytes one rank contributes to a step's collectives."""
        return self.values * numpy.dtype(self.dtype).itemsize

    def _cast(self, grad):
        with numpy.errstate(over="ignore"):  # Inf: the step is skipped (module docstring)
            return grad.astype(self.dtype)

    def allreduce(self, comm, grad, bucket):
        if self.scales is None:
            low = self._cast(grad)
            return _Then(comm.iallreduce(low), lambda: grad.__setitem__(Ellipsis, low))
        scale = self.scales[bucket:bucket + 1]
        low = self._cast(grad * scale)

        def finish():
            grad[...] = low / scale  # a power of two: exact
            self.scales[bucket:bucket + 1] = _next_scale(grad, scale)
        return _Then(comm.iallreduce(low), finish)

    def reduce_scatter(self, comm, grad, out):
        low, low_out = self._cast(grad), backend.xp.empty(out.size, self.dtype)
        return _Then(comm.ireduce_scatter(low, low_out),
                     lambda: out.__setitem__(Ellipsis, low_out))

    def state_dict(self, comm):
        return {} if self.scales is None else {"scales": backend.to_host(self.scales)}

    def load_state_dict(self, state, comm):
        shapes = {} if self.scales is None else {"scales": self.scales.shape}
        state = saved.checked_arrays(state, f"grad_compression ({self.mode})", shapes)
        if self.scales is not None:
            if not (state["scales"] > 0).all():
                raise ValueError(f"grad_compression ({self.mode}): scales must be > 0")
            self.scales[...] = backend.to_device(state["scales"], dtype=self.scales.dtype)
        return True


SCALED_MAX = 2.0**12  # float16's largest is 65504: room for the sum to grow 16-fold


def _next_scale(synchronised, scale):
    """The power of two that brings the largest of `synchronised` to about SCALED_MAX, or
    `scale` / 16 when it holds Inf or NaN (the sum overflowed); within [2^-24, 2^24]."""
    xp = backend.get_array_module(synchronised)
    largest = xp.abs(synchronised).max(keepdims=True)
    wanted = xp.exp2(xp.floor(xp.log2(SCALED_MAX / xp.maximum(largest, 1e-30))))
    return xp.clip(xp.where(xp.isfinite(largest), wanted, scale / 16), 2.0**-24, 2.0**24)


class PowerSGD:
    """Rank-`rank` PowerSGD with error feedback and warm-started Q (module docstring)."""

    def __init__(self, rank=4, seed=0):
        self.rank, self.seed = rank, seed

    def bind(self, buckets, flat):
        """Plan each bucket [(start, end, params)] of `flat`: its matrices (offset in the
        bucket, rows, cols) and its uncompressed slices; draw Q, zero the errors."""
        xp, offsets = backend.get_array_module(flat.grad), dict(zip(map(id, flat.params),
                                                                       flat.offsets))
        self.itemsize = flat.grad.dtype.itemsize
        rng = numpy.random.default_rng((self.seed, zlib.crc32(b"powersgd")))  # same on all ranks
        self.plans, self.q, self.errors = [], [], []
        for start, _, params in buckets:
            matrices, vectors = [], []
            for p in params:
                begin, end = offsets[id(p)]
                rows = p.shape[0] if len(p.shape) >= 2 else 0
                cols = p.size // rows if rows else 0
                if rows and MIN_COMPRESSION * self.rank * (rows + cols) <= rows * cols:
                    matrices.append((begin - start, rows, cols))
                    self.q.append(backend.to_device(rng.standard_normal((cols, self.rank)),
                                                    dtype=flat.grad.dtype))
                    self.errors.append(xp.zeros((rows, cols), flat.grad.dtype))
                else:
                    vectors.append((begin - start, end - start))
            self.plans.append((matrices, vectors))
        self.first_matrix = numpy.cumsum([0] + [len(m) for m, _ in self.plans]).tolist()

    def bytes_sent(self):
        """Bytes one rank contributes to a step's collectives (P, Q and the vectors)."""
        values = sum(self.rank * (rows + cols) for matrices, _ in self.plans
                     for _, rows, cols in matrices) + \
            sum(end - begin for _, vectors in self.plans for begin, end in vectors)
        return values * self.itemsize

    def _matrices(self, grad, b):
        """[(matrix view of the bucket's gradient, its Q, its error)] of bucket b."""
        first = self.first_matrix[b]
        return [(grad[begin:begin + rows * cols].reshape(rows, cols), self.q[first + i],
                 self.errors[first + i])
                for i, (begin, rows, cols) in enumerate(self.plans[b][0])]

    def allreduce(self, comm, grad, b):
        xp = backend.get_array_module(grad)
        matrices, vectors = self.plans[b]
        parts = []
        for m, q, error in self._matrices(grad, b):
            m += error  # M = gradient + error feedback, in place
            parts.append((m @ q).reshape(-1))
        parts += [grad[begin:end] for begin, end in vectors]
        message = xp.concatenate(parts) if parts else grad[:0].copy()
        return _Then(comm.iallreduce(message), lambda: self._second_round(comm, grad, b,
                                                                          message))

    def _second_round(self, comm, grad, b, message):
        xp = backend.get_array_module(grad)
        matrices = self._matrices(grad, b)
        ps, offset = [], 0
        for m, q, _ in matrices:
            rows, rank = m.shape[0], q.shape[1]
            ps.append(xp.linalg.qr(message[offset:offset + rows * rank].reshape(rows, rank))[0])
            offset += rows * rank
        for begin, end in self.plans[b][1]:  # the uncompressed ones, summed
            grad[begin:end] = message[offset:offset + end - begin]
            offset += end - begin
        if not matrices:
            return
        qs = xp.concatenate([(m.T @ p).reshape(-1) for (m, _, _), p in zip(matrices, ps)])
        comm.allreduce(qs)
        offset, share = 0, 1.0 / comm.size
        for (m, q, error), p in zip(matrices, ps):
            q[...] = qs[offset:offset + q.size].reshape(q.shape)  # warm start
            offset += q.size
            approximation = p @ q.T
            error[...] = m - approximation * share
            m[...] = approximation

    def state_dict(self, comm):
        """{"q.i": Q of matrix i, "error": every rank's errors (ranks x values)}; call on
        every rank: the errors are gathered (the result is complete on rank 0)."""
        xp = backend.xp
        state = {f"q.{i}": backend.to_host(q) for i, q in enumerate(self.q)}
        mine = xp.concatenate([e.reshape(-1) for e in self.errors]) if self.errors else \
            xp.zeros(0, backend.float_dtype)
        everyone = xp.empty(mine.size * comm.size, mine.dtype)
        comm.allgather(mine, everyone)
        state["error"] = backend.to_host(everyone).reshape(comm.size, mine.size)
        return state

    def load_state_dict(self, state, comm):
        """Q and this rank's errors from a state_dict(); True, or False when the errors were
        written by another number of ranks and restart from zero."""
        size = sum(e.size for e in self.errors)
        expected = {f"q.{i}": q.shape for i, q in enumerate(self.q)}
        state = saved.checked_arrays(state, "grad_compression (powersgd)",
                                     {**expected, "error": None})
        for i, q in enumerate(self.q):
            q[...] = backend.to_device(state[f"q.{i}"], dtype=q.dtype)
        errors = state["error"]
        if errors.ndim != 2 or errors.shape[1] != size:
            raise ValueError(f"grad_compression (powersgd): error has shape {errors.shape}, "
                             f"expected (ranks, {size})")
        if errors.shape[0] != comm.size:
            for error in self.errors:
                error[...] = 0
            return False
        mine, offset = errors[comm.rank], 0
        for error in self.errors:
            error[...] = backend.to_device(mine[offset:offset + error.size],
                                           dtype=error.dtype).reshape(error.shape)
            offset += error.size
        return True

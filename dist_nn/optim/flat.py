"""Flat parameter and gradient buffers.

All trainable parameters of a model are packed into one contiguous data buffer and one
gradient buffer; each Parameter's `.data` and `.grad` become views into them. An optimizer
step is then a few vectorised operations over the whole model, and the gradient allreduce
moves contiguous buckets without copies. Parameters are laid out in reverse registration
order, which is the order in which backward produces their gradients.
"""
from .. import backend


class FlatParameters:
    def __init__(self, params):
        unique = list({id(p): p for p in params if p.requires_grad}.values())
        if not unique:
            raise ValueError("no trainable parameters: every parameter is frozen or the model "
                             "has none")
        dtypes = {p.data.dtype for p in unique}
        if len(dtypes) > 1:
            raise ValueError(f"parameters mix dtypes {sorted(map(str, dtypes))}; "
                             "build the model under one backend dtype")
        self.params = unique[::-1]
        xp = backend.get_array_module(self.params[0].data)
        dtype = dtypes.pop()
        total = sum(p.size for p in self.params)
        self.data = xp.empty(total, dtype=dtype)
        self.grad = xp.empty(total, dtype=dtype)
        self.decay_mask = xp.empty(total, dtype=dtype)  # 1 where weight decay / L1 applies
        self.offsets = []
        start = 0
        for p in self.params:
            end = start + p.size
            self.data[start:end] = p.data.reshape(-1)
            self.grad[start:end] = p.grad.reshape(-1)
            self.decay_mask[start:end] = 1.0 if p.weight_decay else 0.0
            p.data = self.data[start:end].reshape(p.shape)
            p.grad = self.grad[start:end].reshape(p.shape)
            self.offsets.append((start, end))
            start = end
        self.all_decay = all(p.weight_decay for p in self.params)

    @property
    def size(self):
        return self.data.size


class FlatShard:
    """The part of a FlatParameters that one rank updates under ZeRO-1: the pieces
    [(start, end)] of the flat buffer, packed one after another into contiguous `data`,
    `grad` and `decay_mask` arrays. Optimizers take it in place of a FlatParameters."""

    def __init__(self, flat, pieces):
        self.flat, self.pieces = flat, list(pieces)
        self.slices, start = [], 0  # where each piece lies in the shard
        for begin, end in self.pieces:
            self.slices.append(slice(start, start + end - begin))
            start += end - begin
        self.data = self.take(flat.data)
        self.grad = self.data * 0
        self.decay_mask = self.take(flat.decay_mask)
        self.all_decay = flat.all_decay

    @property
    def size(self):
        return self.data.size

    def take(self, full):
        """This shard's values of a vector laid out like the flat buffer (a copy)."""
        xp = backend.get_array_module(full)
        return xp.concatenate([full[begin:end] for begin, end in self.pieces] or
                              [full[:0]])

    def load(self):
        """Copy the model's current parameters into the shard."""
        for (begin, end), part in zip(self.pieces, self.slices):
            self.data[part] = self.flat.data[begin:end]

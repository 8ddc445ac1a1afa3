"""The one rule for what a call costs on a GPU: how many kernels it launches (counted as
device operations) and whether CuPy reads a value back to the host to make it (a host sync
the caller does not see). Every stand-in array function, method, operator and index goes
through `kernels` and `reads_back` (via _dispatch.call). Two kernels are counted where they
happen: an NCCL collective (cuda/_nccl.py) and get(out=) into another memory layout
(_ndarray.py); explicit transfers and synchronisations are counted in cuda/_context.py."""
import numpy

# These allocate device memory and write nothing: no kernel.
ALLOCATION_ONLY = frozenset({"empty", "empty_like"})

# CuPy sizes these results by reading a count back to the host.
READ_BACK = frozenset({"nonzero", "flatnonzero", "argwhere", "unique", "extract", "compress"})


def _arrays(result):
    if isinstance(result, (numpy.ndarray, numpy.generic)):
        yield result
    elif type(result) in (list, tuple):
        for item in result:
            yield from _arrays(item)


def kernels(name, inputs, result, writes_in_place):
    """Kernels launched by a call named `name` on the NumPy arrays `inputs` that returned
    `result` (NumPy): one, except for allocations, metadata and views of an input (reshape,
    transpose, basic slicing, a no-op asarray/astype/ascontiguousarray), which launch none.
    A call writing in place (out=, +=, setitem, fill) launches one."""
    if name in ALLOCATION_ONLY:
        return 0
    if writes_in_place or result is None:
        return 1
    arrays = list(_arrays(result))
    views = [a for a in arrays if isinstance(a, numpy.ndarray)
             and any(numpy.may_share_memory(a, given) for given in inputs)]
    return 0 if len(views) == len(arrays) else 1


def reads_back(name, args):
    """Whether CuPy must read a device value back to the host to carry out the call."""
    if name == "where":  # where(condition) is nonzero(condition)
        return len(args) == 1
    if name == "getitem":  # a boolean mask: the result's size is the mask's count
        key = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(getattr(k, "dtype", None) == numpy.bool_ for k in key)
    return name in READ_BACK

"""The array backend: NumPy on the CPU or CuPy on a GPU, chosen once, used everywhere.

Layers never import numpy or cupy for device math. They take the array module from their
input (`get_array_module(x)`) or, when creating arrays, from `backend.xp`. Selection is by
`use(device, dtype)` or the environment variables DIST_NN_DEVICE (auto|cpu|gpu) and
DIST_NN_DTYPE (float32|float64), read at import.
"""
import contextlib
import ctypes
import os
import resource
import sys
import zlib

import numpy


def _tune_host():
    """Keep freed memory in the heap (glibc): by default glibc returns large freed blocks to
    the OS and maps fresh zero pages for the next allocation of the same size, so every
    training step would page-fault its activations in again, which costs about 3x writing
    them. DIST_NN_HOST_TUNING=0 leaves malloc as it is."""
    if os.environ.get("DIST_NN_HOST_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):  # glibc: M_MMAP_MAX = -4, M_TRIM_THRESHOLD = -1
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 2**31 - 1)


_tune_host()

try:  # CuPy is optional: without it only the CPU exists.
    import cupy
except ImportError:
    cupy = None

DEVICES = ("auto", "cpu", "gpu")
DTYPES = {"float32": numpy.float32, "float64": numpy.float64}

xp = numpy                  # the active array module
device = "cpu"              # "cpu" or "gpu", as resolved by use()
float_dtype = numpy.float32  # dtype of parameters, activations and gradients


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: CuPy raises its own runtime errors
        return False


def use(device=None, dtype=None):
    """Select the array module ("auto" | "cpu" | "gpu") and/or the default float dtype."""
    global xp, float_dtype
    if device is not None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if device == "gpu" and not gpu_available():
            raise RuntimeError("device 'gpu' requested but no CUDA GPU is usable: install the "
                               "'gpu' extra (cupy-cuda12x) on a machine with an NVIDIA GPU, "
                               "or use device 'cpu'")
        resolved = "gpu" if device == "gpu" or (device == "auto" and gpu_available()) else "cpu"
        globals()["device"] = resolved
        xp = cupy if resolved == "gpu" else numpy
    if dtype is not None:
        name = numpy.dtype(dtype).name
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
        float_dtype = DTYPES[name]


@contextlib.contextmanager
def using(device=None, dtype=None):
    """`use()` for the duration of a with-block (tests, benchmarks)."""
    saved = globals()["device"], float_dtype  # the module's, not the argument's
    use(device, dtype)
    try:
        yield
    finally:
        use(*saved)


def overflow_allowed():
    """A with-block in which float overflow (Inf) and invalid results (NaN) pass silently,
    where they are expected (mixed precision: the loss scaler finds and skips them). NumPy
    warns of them; CuPy never does."""
    return numpy.errstate(over="ignore", invalid="ignore")


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


def to_device(array, dtype=None):
    """Copy a host array (or anything array-like) to the active device."""
    return xp.asarray(array, dtype=dtype)


def on_gpu(array):
    """True for a CuPy (device) array."""
    return cupy is not None and isinstance(array, cupy.ndarray)


def to_host(array):
    """A NumPy array with the same values (no copy when it already is one)."""
    if on_gpu(array):
        return array.get()
    return numpy.asarray(array)


def read(*values):
    """Python floats of 0-d arrays (or numbers), read from the device in one copy: on a GPU
    one host sync for all of them."""
    arrays = [v for v in values if on_gpu(v)]
    if arrays:
        host = iter(cupy.stack(arrays, dtype=cupy.float64).get().tolist())
        return [next(host) if on_gpu(v) else float(v) for v in values]
    return [float(v) for v in values]


def free_memory():
    """Bytes this process may still allocate for arrays on the active device: the GPU's free
    memory, or on the host the least of MemAvailable, what its memory cgroups still allow
    (a SLURM job's limit) and what its address-space limit (`ulimit -v`) leaves."""
    if device == "gpu":
        return cupy.cuda.Device().mem_info[0]
    return min(_host_available(), *_cgroup_headroom(), _address_space_headroom())


def _host_available():
    """MemAvailable (Linux), else all physical memory."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# cgroup v2 and v1 files: (limit, usage); the usage counts page cache, of which the inactive
# part is reclaimed before the limit is enforced (as container runtimes count a working set)
_CGROUP_FILES = {"cgroup2": ("memory.max", "memory.current", "inactive_file"),
                 "cgroup": ("memory.limit_in_bytes", "memory.usage_in_bytes",
                            "total_inactive_file")}


def _cgroup_headroom():
    """Limit minus working set of each memory cgroup holding this process, its ancestors
    included (a limit may sit on any of them); empty where there are none (not Linux)."""
    try:
        with open("/proc/self/cgroup") as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return []
    headroom = []
    for fields in mounts:
        kind = fields[fields.index("-") + 1]
        if kind not in _CGROUP_FILES or kind == "cgroup" and "memory" not in fields[-1]:
            continue
        root, mount_point = fields[3], fields[4]
        for _, controllers, path in memberships:
            if (controllers == "") != (kind == "cgroup2") or \
                    kind == "cgroup" and "memory" not in controllers.split(","):
                continue
            if not (path + "/").startswith(root.rstrip("/") + "/"):
                continue  # this process's cgroup is not visible through this mount
            folder = os.path.normpath(mount_point + "/" + path[len(root.rstrip("/")):])
            while folder.startswith(mount_point):
                room = _cgroup_room(folder, *_CGROUP_FILES[kind])
                if room is not None:
                    headroom.append(room)
                if folder == mount_point:
                    break
                folder = os.path.dirname(folder)
    return headroom


def _cgroup_room(folder, limit_file, usage_file, inactive_key):
    """A cgroup folder's limit minus its working set, or None if it sets no limit."""
    try:
        with open(os.path.join(folder, limit_file)) as f:
            limit = f.read().strip()
        with open(os.path.join(folder, usage_file)) as f:
            usage = int(f.read())
        with open(os.path.join(folder, "memory.stat")) as f:
            stat = dict(line.split() for line in f)
    except (OSError, ValueError):
        return None
    if limit == "max" or int(limit) >= 2**62:  # v1 writes "no limit" as a huge number
        return None
    return max(0, int(limit) - usage + int(stat.get(inactive_key, 0)))


def _address_space_headroom():
    """RLIMIT_AS minus this process's virtual size (what `ulimit -v` still allows)."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return float("inf")
    try:
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return limit
    return max(0, limit - size)


def synchronize():
    """Wait for queued device work (GPU kernels run asynchronously); a no-op on the CPU."""
    if device == "gpu":
        cupy.cuda.Device().synchronize()


# --- random streams ------------------------------------------------------------------
# Every random draw comes from a named stream. A stream's seed is derived from the run seed,
# the stream name and (for per-rank streams) the rank, so streams are independent of one
# another and reproducible; `seed(..., *key)` lets a trainer re-derive them at, e.g., each step.
_seed_key = (0,)
_rank = 0
_generators = {}


def seed(run_seed, rank=0, *key):
    """Reset all random streams for this run seed, rank and optional extra key."""
    global _seed_key, _rank
    _seed_key = (int(run_seed),) + tuple(int(k) for k in key)
    _rank = int(rank)
    _generators.clear()


def generator(stream, per_rank=True, on_device=True):
    """The random Generator of a named stream, on the active device unless on_device=False;
    one stream for all ranks when per_rank is False."""
    on_gpu = on_device and device == "gpu"
    cache_key = (stream, per_rank, on_gpu)
    if cache_key not in _generators:
        rank_key = _rank + 1 if per_rank else 0
        seq = numpy.random.SeedSequence(_seed_key, spawn_key=(zlib.crc32(stream.encode()), rank_key))
        if on_gpu:  # Philox: set up in O(1), where default_rng's XORWOW takes ms a step
            _generators[cache_key] = cupy.random.Generator(
                cupy.random.Philox4x3210(int(seq.generate_state(1, numpy.uint64)[0])))
        else:
            _generators[cache_key] = numpy.random.default_rng(seq)
    return _generators[cache_key]


use(os.environ.get("DIST_NN_DEVICE", "auto"), os.environ.get("DIST_NN_DTYPE", "float32"))

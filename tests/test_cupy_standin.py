"""The CuPy stand-in (tests/gpu_standin): CuPy's names only, CuPy's host boundary, exact
operation and sync counts, stream hand-off, NCCL over MPI, and dist_nn running on it as on
NumPy. Each check runs in a fresh interpreter with the stand-in first on PYTHONPATH, so the
suite needs neither a GPU nor DIST_NN_CUPY_STANDIN."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launch import mpirun

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "gpu_standin"
NAMES_FILE = STANDIN / "cupy_names.txt"
LISTER = STANDIN / "list_cupy_names.py"


def standin_env(**extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(STANDIN), str(ROOT)]),
                DIST_NN_HOST_TUNING="0", **extra)


def on_standin(code, **extra_env):
    """Run `code` with the stand-in as cupy; its stdout (fails with its stderr)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=standin_env(**extra_env), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def listed_names(lines):
    return {line for line in lines if line and not line.startswith("#")}


def test_implicit_conversion_to_numpy_raises():
    on_standin("""
        import numpy, pytest, cupy
        x = cupy.arange(3.0)
        message = "Implicit conversion to a NumPy array is not allowed"
        for convert in (numpy.asarray, numpy.array, lambda a: a.__array__(),
                        lambda a: numpy.empty(3).__setitem__(Ellipsis, a)):
            with pytest.raises(TypeError, match=message):
                convert(x)
    """)


def test_numpy_operands_raise_as_in_cupy_and_scalars_pass():
    on_standin("""
        import numpy, pytest, cupy
        x, host = cupy.arange(3.0), numpy.ones(3)
        for mix in (lambda: x + host, lambda: host + x, lambda: cupy.maximum(x, host),
                    lambda: numpy.maximum(x, host), lambda: numpy.concatenate([x, host]),
                    lambda: x.__iadd__(host), lambda: cupy.matmul(x, numpy.ones((3, 3))),
                    lambda: x + [1.0, 2.0, 3.0]):
            with pytest.raises(TypeError, match="Unsupported type <class"):
                mix()
        with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
            x[...] = host
        y = x + numpy.float32(2) + 1 + numpy.array(3.0)[()] * 2.0
        x[...] = numpy.float64(7.0)
        x[0] = numpy.array(1.0)  # a 0-d NumPy array is a scalar to CuPy's fill
        picked = x[numpy.array([0, 2])]  # a NumPy index is uploaded
        assert cupy.asnumpy(picked).tolist() == [1.0, 7.0]
        assert type(y) is cupy.ndarray and cupy.asnumpy(y).tolist() == [9.0, 10.0, 11.0]
    """)


def test_explicit_transfers_are_counted_syncs_and_uploads():
    on_standin("""
        import numpy, cupy
        from cupy import _standin
        x = cupy.arange(4.0)
        one = x[1]  # a 0-d view
        transfers = {"get": lambda: x.get(), "get_out": lambda: x.get(out=numpy.empty(4)),
                     "asnumpy": lambda: cupy.asnumpy(x), "item": lambda: one.item(),
                     "tolist": lambda: x.tolist(), "float": lambda: float(one),
                     "int": lambda: int(one), "bool": lambda: 1 if one else 0,
                     "repr": lambda: repr(x), "device": lambda: cupy.cuda.Device().synchronize(),
                     "stream": lambda: cupy.cuda.Stream.null.synchronize(),
                     "event": lambda: cupy.cuda.Event().synchronize()}
        for name, transfer in transfers.items():
            with _standin.counting() as counted:
                transfer()
            assert (counted.syncs, counted.ops, counted.uploads) == (1, 0, 0), name
        with _standin.counting() as counted:
            assert len(x) == 4 and x.shape == (4,) and x.data.ptr and x.device.id == 0
            x.set(numpy.ones(4))
            cupy.asarray(numpy.zeros(2))
            cupy.array([1, 2])
        assert (counted.syncs, counted.ops, counted.uploads) == (0, 0, 3)
    """)


def test_a_fixed_program_costs_exactly_its_kernels_syncs_and_uploads():
    out = on_standin("""
        import numpy, cupy
        from cupy import _standin
        with _standin.counting() as counted:
            x = cupy.arange(12, dtype=cupy.float64).reshape(3, 4)  # 1 op (reshape: a view)
            w = cupy.ones((4, 2))                                   # 1 op
            y = x @ w                                               # 1 op
            y += 1.0                                                # 1 op
            z = cupy.maximum(y, 0).sum(axis=0)                      # 2 ops
            first = y.T[0]                                          # views: 0
            e = cupy.empty_like(z)                                  # an allocation: 0
            e[...] = z                                              # 1 op
            total = float(e.sum())                                  # 1 op, 1 sync
            host = cupy.asnumpy(y)                                  # 1 sync
            picked = y[numpy.array([0, 2])]                         # 1 upload, 1 op
            rng = cupy.random.default_rng(0)                        # 1 generator: XORWOW
            noise = rng.standard_normal((2, 2), dtype=cupy.float32) # 1 op
            philox = cupy.random.Generator(cupy.random.Philox4x3210(0))  # 1 generator
        print(counted.ops, counted.syncs, counted.uploads, counted.generators_created,
              counted.slow_generator_setups)
        expected = numpy.arange(12.0).reshape(3, 4) @ numpy.ones((4, 2)) + 1
        assert total == expected.sum() and (host == expected).all()
        assert (cupy.asnumpy(first) == expected.T[0]).all()
        assert (cupy.asnumpy(picked) == expected[[0, 2]]).all()
        assert noise.dtype == numpy.float32 and noise.shape == (2, 2)
        sites = {kind: set(counted.by_site[kind]) for kind in ("ops", "syncs", "uploads")}
        assert all(site.startswith("<string>:") for found in sites.values() for site in found)
        assert len(sites["syncs"]) == 2 and sum(counted.by_site["ops"].values()) == 10
    """)
    assert out.split() == ["10", "2", "1", "2", "1"]


def test_views_share_memory_and_cost_nothing():
    on_standin("""
        import numpy, cupy
        from cupy import _standin
        x = cupy.zeros(12)
        with _standin.counting() as counted:
            views = [x.reshape(3, 4), x.reshape(3, 4).T, x[2:10], x[None].squeeze(), x.ravel(),
                     x.reshape(3, 4).swapaxes(0, 1), x.view(numpy.int64), x[3],
                     cupy.lib.stride_tricks.as_strided(x, (5, 4), (16, 8)), cupy.asarray(x),
                     cupy.ascontiguousarray(x), x.astype(numpy.float64, copy=False)]
        assert (counted.ops, counted.syncs) == (0, 0)
        assert views[7].shape == () and type(views[7]) is cupy.ndarray
        x[...] = 1.0
        assert all(cupy.asnumpy(v).all() for v in views if v.dtype == numpy.float64)
        assert x.reshape(3, 4).T.data.ptr == x.data.ptr
        with _standin.counting() as counted:
            x.reshape(3, 4).T.ravel()     # not contiguous: a copy
            x.astype(numpy.float32)
            x.copy()
        assert counted.ops == 3
    """)


def test_numpy_functions_and_ufuncs_run_the_standins():
    on_standin("""
        import numpy, cupy
        from cupy import _standin
        x = cupy.arange(4.0)
        with _standin.counting() as counted:
            results = [numpy.sum(x), numpy.concatenate([x, x]), numpy.maximum(x, 1.0),
                       numpy.linalg.norm(x), numpy.exp(x)]
            numpy.add.at(x, cupy.asarray([0, 0]), 1.0)
        assert all(type(r) is cupy.ndarray for r in results)
        assert (counted.ops, counted.uploads) == (6, 1)
        assert cupy.asnumpy(x).tolist() == [2.0, 1.0, 2.0, 3.0]
        assert cupy.get_array_module(numpy.ones(1), x) is cupy
        assert cupy.get_array_module(numpy.ones(1)) is numpy
    """)


def test_hidden_syncs_of_cupy_are_counted():
    """CuPy reads a count back to size the result of a boolean mask or nonzero."""
    on_standin("""
        import cupy
        from cupy import _standin
        x = cupy.arange(6.0)
        for hidden in (lambda: x[x > 2], lambda: cupy.nonzero(x), lambda: x.nonzero(),
                       lambda: cupy.unique(x), lambda: cupy.where(x > 1)):
            with _standin.counting() as counted:
                hidden()
            assert counted.syncs == 1
        with _standin.counting() as counted:
            cupy.where(x > 1, x, 0.0)
        assert counted.syncs == 0
    """)


def test_every_standin_name_is_real_cupys_and_missing_ones_raise():
    exposed = on_standin("""
        import sys
        import list_cupy_names  # beside the stand-in, on its path
        list_cupy_names.main()
        public = {name for name in sys.modules if name.split(".")[0] in ("cupy", "cupyx")
                  and not any(part.startswith("_") for part in name.split("."))}
        assert public <= set(list_cupy_names.NAMESPACES), public  # no unlisted module
    """).splitlines()
    real = listed_names(NAMES_FILE.read_text().splitlines())
    assert exposed and set(exposed) <= real, sorted(set(exposed) - real)
    on_standin("""
        import pytest, cupy
        x = cupy.zeros(2)
        rng = cupy.random.default_rng(0)
        for missing in (lambda: cupy.frobnicate, lambda: x.resize, lambda: rng.normal,
                        lambda: cupy.fromfile, lambda: cupy.cuda.Stream.query,
                        lambda: cupy.linalg.matrix_norm):
            with pytest.raises(AttributeError):
                missing()
    """)


def test_without_the_nccl_library_nccl_has_only_available():
    out = on_standin("""
        from cupy.cuda import nccl
        print(sorted(name for name in dir(nccl) if not name.startswith("_")), nccl.available)
    """, DIST_NN_STANDIN_NCCL="0")
    assert out.strip() == "['available'] False"


def real_cupy_python():
    """An interpreter importing real CuPy (DIST_NN_REAL_CUPY_PYTHON, else this one), with the
    stand-in off its path; None when there is none."""
    python = os.environ.get("DIST_NN_REAL_CUPY_PYTHON", sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DIST_NN_CUPY_STANDIN")}
    try:
        found = subprocess.run([python, "-c", "import cupy; print(cupy.__file__)"], env=env,
                               capture_output=True, text=True, timeout=120, cwd="/",
                               check=False)
    except OSError:
        return None, env
    real = found.returncode == 0 and not found.stdout.startswith(str(STANDIN))
    return (python if real else None), env


def test_the_names_file_is_real_cupys_listing():
    """cupy_names.txt cannot drift from CuPy: it equals what the installed CuPy lists, but
    for cupy.cuda.nccl (NCCL's library is rarely installed; see the file's header)."""
    python, env = real_cupy_python()
    if python is None:
        pytest.skip("real CuPy is not installed (pip install cupy-cuda12x; or name an "
                    "interpreter that has it in DIST_NN_REAL_CUPY_PYTHON)")
    listing = subprocess.run([python, str(LISTER)], env=env, capture_output=True, text=True,
                             timeout=300, cwd="/", check=False)
    assert listing.returncode == 0, listing.stderr

    def without_nccl(names):
        return {name for name in names if not name.startswith("cupy.cuda.nccl.")}
    assert without_nccl(listing.stdout.splitlines()) == \
        without_nccl(listed_names(NAMES_FILE.read_text().splitlines()))


def test_dist_nn_runs_on_the_standin_as_on_numpy():
    on_standin("""
        import numpy, cupy
        from dist_nn import backend, models, nn

        def step(device):
            backend.use(device, "float64")
            backend.seed(0)
            model = models.build("mlp", (4,), 3, hidden=(5,))
            loss = nn.SoftmaxCrossEntropy()
            rng = numpy.random.default_rng(0)
            x = backend.to_device(rng.standard_normal((8, 4)))
            y = backend.to_device(rng.integers(0, 3, 8))
            out = model.forward(x)
            value = loss.forward(out, y)
            dx = model.backward(loss.backward())
            assert type(out) is (cupy.ndarray if device == "gpu" else numpy.ndarray)
            return [backend.to_host(a) for a in (out, value, dx,
                                                 *(p.grad for p in model.parameters()))]

        on_cpu, on_gpu = step("cpu"), step("gpu")
        for cpu, gpu in zip(on_cpu, on_gpu):
            numpy.testing.assert_allclose(gpu, cpu, rtol=1e-12)
    """)


def test_strict_handoff_refuses_buffers_with_unsynchronised_work():
    on_standin("""
        import pytest, cupy
        from mpi4py import MPI
        from cupy import _standin
        x = cupy.ones(4)
        assert _standin.pending_work() and x.__cuda_array_interface__  # allowed by default
        _standin.strict_handoff(True)
        with pytest.raises(RuntimeError, match="handed over with unsynchronised work"):
            x.__cuda_array_interface__
        # mpi4py asks hasattr() first, which swallows the refusal: MPI then refuses the buffer
        with pytest.raises(TypeError, match="expecting buffer"):
            MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, x)
        cupy.cuda.get_current_stream().synchronize()
        assert not _standin.pending_work()
        MPI.COMM_SELF.Allreduce(MPI.IN_PLACE, x)  # read through __cuda_array_interface__
        side = cupy.cuda.Stream(non_blocking=True)
        with side:
            x *= 2
            with pytest.raises(RuntimeError, match=f"stream {side.ptr:#x}"):
                x.__cuda_array_interface__
        x.__cuda_array_interface__  # the current stream has nothing queued
        cupy.cuda.get_current_stream().wait_event(side.record())
        with pytest.raises(RuntimeError):  # ... until it waits for the side stream's work
            x.__cuda_array_interface__
        cupy.cuda.Device().synchronize()
        assert x.__cuda_array_interface__["stream"] == 1  # the legacy default stream
        assert cupy.asnumpy(x).tolist() == [2.0] * 4
    """)


def test_cuda_is_initialised_on_the_device_chosen_first():
    on_standin("""
        import pytest, cupy
        from cupy import _standin
        assert cupy.cuda.runtime.getDeviceCount() == 4 and _standin.cuda_initialised_on() is None
        cupy.cuda.Device(2).use()
        cupy.zeros(3)
        assert _standin.cuda_initialised_on() == 2 and cupy.cuda.Device().id == 2
        with cupy.cuda.Device(3):
            cupy.ones(1)
        assert _standin.devices_used() == [2, 3] and cupy.cuda.get_device_id() == 2
        with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
            cupy.cuda.Device(4).use()
    """, DIST_NN_STANDIN_GPUS="4")
    on_standin("""
        import pytest, cupy
        from dist_nn import backend
        assert not cupy.cuda.is_available() and not backend.gpu_available()
        with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="no CUDA-capable device"):
            cupy.zeros(1)
    """, DIST_NN_STANDIN_GPUS="0")


NCCL_PROGRAM = """
    import json, sys
    import numpy, cupy
    from cupy import _standin
    from cupy.cuda import nccl
    from dist_nn import backend
    from dist_nn.distributed.comm import chunk_bounds
    from dist_nn.distributed.process import allow_exit, setup

    comm = setup("nccl", "gpu")
    rank, size = comm.rank, comm.size
    assert _standin.cuda_initialised_on() == comm.local_rank  # chosen before any allocation
    xp = backend.xp
    totals = xp.arange(10.0) + rank
    comm.allreduce(totals)
    biggest = xp.asarray([float(rank), -float(rank)])
    comm.allreduce(biggest, "max")
    pending = xp.full(7, rank + 1.0)
    comm.iallreduce(pending).wait()
    start, end = chunk_bounds(7, size)[rank]
    mine = xp.zeros(end - start)
    comm.reduce_scatter(xp.arange(7.0) * (rank + 1), mine)
    gathered = xp.zeros(7)
    comm.iallgather(xp.full(end - start, float(rank)), gathered).wait()
    shared = xp.full(3, float(rank))
    comm.bcast(shared, root=size - 1)
    results = [backend.to_host(a).tolist() for a in (totals, biggest, pending, mine, gathered,
                                                       shared)]
    everyone = comm.allgather_obj(results)
    allow_exit()
    if rank == 0:
        json.dump(everyone, open(sys.argv[1], "w"))
"""


@pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec (pip install mpich)")
@pytest.mark.parametrize("ranks", [2, 4])
def test_nccl_collectives_really_reduce_over_mpi(tmp_path, ranks):
    out = tmp_path / "nccl.json"
    done = mpirun.run(ranks, [sys.executable, "-c", textwrap.dedent(NCCL_PROGRAM), str(out)],
                      env=standin_env(DIST_NN_STANDIN_GPUS=str(ranks)), capture_output=True,
                      text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    everyone = json.loads(out.read_text())
    n = ranks
    summed = [float(i * n + n * (n - 1) // 2) for i in range(10)]
    chunk = -(-7 // n)
    scattered = [i * n * (n + 1) / 2 for i in range(7)]
    owner = [float(min(i // chunk, n - 1)) for i in range(7)]
    for rank, (totals, biggest, pending, mine, gathered, shared) in enumerate(everyone):
        assert totals == summed and biggest == [n - 1.0, 0.0]
        assert pending == [n * (n + 1) / 2] * 7 and gathered == owner
        assert mine == scattered[rank * chunk:(rank + 1) * chunk] and shared == [n - 1.0] * 3


@pytest.mark.skipif(mpirun.mpiexec_path() is None, reason="no mpiexec (pip install mpich)")
def test_nccl_refuses_two_ranks_on_one_gpu():
    code = """
        from mpi4py import MPI
        from cupy.cuda import nccl
        uid = MPI.COMM_WORLD.bcast(nccl.get_unique_id())
        try:
            nccl.NcclCommunicator(2, uid, MPI.COMM_WORLD.Get_rank())
        except nccl.NcclError as error:
            assert "duplicate GPU" in str(error), error
        else:
            raise AssertionError("two ranks shared device 0")
    """
    done = mpirun.run(2, [sys.executable, "-c", textwrap.dedent(code)], env=standin_env(),
                      capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr

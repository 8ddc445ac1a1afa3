"""The checks every layer case goes through (cases: tests/reference/layers.py).

- against the stored PyTorch fixture (always),
- against PyTorch live on freshly drawn inputs (skipped without torch),
- central-difference gradients of the input and every parameter (float64).
"""
import functools

import numpy as np
import pytest

from dist_nn import backend, nn
from dist_nn.nn.gradcheck import check_gradients
from tests.reference import fixtures, layers

LIVE_SEED = 1
TOLERANCE = 1e-10           # max |ours - torch| / max |torch|, per array, float64
FLOAT32_TOLERANCE = 1e-4    # the same in float32, against the float64 reference
GRADCHECK_TOLERANCE = 1e-7  # relative error of central differences (eps = 1e-6)


def cases(module):
    """The cases of one dist_nn/nn file, as pytest parameters named after the case."""
    return [pytest.param(case, id=case.name) for case in layers.CASES if case.module == module]


@functools.lru_cache(maxsize=None)
def stored():
    return fixtures.load("layers")


def split_fixture(case):
    """(inputs, PyTorch's outputs) of a case's stored fixture."""
    arrays = stored()[case.name]
    input_keys = {"x", "dy", "target"}
    inputs = {k: v for k, v in arrays.items() if k in input_keys or k.startswith("param.")}
    return inputs, {k: v for k, v in arrays.items() if k not in inputs}


def build_loaded(case, inputs, dtype="float64", device="cpu"):
    """Our module for a case with the case's stored state loaded (strict)."""
    module = layers.build_ours(case, dtype=dtype, device=device)
    if case.target is None:
        module.load_state_dict(layers.state_from(inputs), strict=True)
    return module


def our_outputs(case, inputs, dtype="float64", device="cpu"):
    """y, dx, grad.* and buffer.* from our module (NumPy copies), in the names torch_outputs
    uses; run on `device` ("cpu", or "gpu" with CuPy)."""
    with backend.using(device, dtype):
        return _run(case, inputs, dtype, device)


def _run(case, inputs, dtype, device):
    module = build_loaded(case, inputs, dtype, device)
    passed = {k: backend.to_device(inputs[k].astype(
        dtype if inputs[k].dtype.kind == "f" else inputs[k].dtype)) for k in ("x", "dy", "target")
        if k in inputs}
    if case.target is not None:
        y = module.forward(passed["x"], passed["target"])
        outputs = {"y": backend.to_host(y), "dx": backend.to_host(module.backward())}
    else:
        y = backend.to_host(module.forward(passed["x"])).copy()  # before backward can touch it
        outputs = {"y": y, "dx": backend.to_host(module.backward(passed["dy"]))}
        outputs.update({f"grad.{n}": backend.to_host(p.grad) for n, p in module.named_parameters()})
        outputs.update({f"buffer.{n}": backend.to_host(b) for n, b in module.named_buffers()})
    for key, value in passed.items():  # e.g. Residual hands the same dy to both paths
        assert np.array_equal(backend.to_host(value), inputs[key].astype(value.dtype)), \
            f"{case.name}: {key} was modified in place"
    return outputs


def assert_matches(ours, reference, name, tolerance=TOLERANCE):
    """Same names and shapes; values equal to `tolerance` relative to the array's largest."""
    assert sorted(ours) == sorted(reference), f"{name}: outputs differ in names"
    for key, expected in reference.items():
        actual = np.asarray(ours[key])
        assert actual.shape == expected.shape, \
            f"{name}/{key}: shape {actual.shape} vs {expected.shape}"
        if expected.dtype.kind in "iu":
            assert np.array_equal(actual, expected), f"{name}/{key}: {actual} vs {expected}"
            continue
        scale = np.abs(expected).max(initial=0.0)
        error = np.abs(actual - expected).max(initial=0.0) / (scale if scale > 0 else 1.0)
        assert error < tolerance, f"{name}/{key}: relative error {error:.3g}"


def check_against_fixture(case):
    inputs, reference = split_fixture(case)
    assert_matches(our_outputs(case, inputs), reference, case.name)


def check_float32(case):
    """The float32 path (training's default): float outputs stay float32 and agree with
    PyTorch's float64 results to float32 precision."""
    inputs, reference = split_fixture(case)
    ours = our_outputs(case, inputs, "float32")
    for key, value in ours.items():
        if reference[key].dtype.kind == "f":
            assert np.asarray(value).dtype == np.float32, f"{case.name}/{key}: {value.dtype}"
    assert_matches(ours, reference, case.name, FLOAT32_TOLERANCE)


def check_against_torch(case):
    torch = fixtures.torch_or_none()
    if torch is None:
        pytest.skip("PyTorch is not installed: the fixture comparison stands in")
    inputs = layers.make_inputs(case, LIVE_SEED)
    assert_matches(our_outputs(case, inputs), layers.torch_outputs(torch, case, inputs), case.name)


def assert_gradients(module, x, **kwargs):
    """check_gradients on a module (float64) and assert every error is small."""
    errors = check_gradients(module, x, **kwargs)
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors
    assert not any(errors.kinks.values()), f"entries left out on kinks: {errors.kinks}"
    return errors


def check_case_gradients(case):
    inputs, _ = split_fixture(case)
    module = build_loaded(case, inputs)
    if case.target is not None:  # a loss: the gradient of the loss with respect to x
        return assert_gradients(nn.Sequential(), inputs["x"].copy(), loss=module,
                                target=inputs["target"])
    errors = assert_gradients(module, inputs["x"].copy())
    assert sorted(errors) == sorted(["input"] + [n for n, _ in module.named_parameters()])
    return errors


def reference_tests(cases):
    """The four checks every layer file runs on its cases, as pytest test functions:
    against the PyTorch fixture, against PyTorch live, in float32, and gradients."""
    def parametrized(check):
        @pytest.mark.parametrize("case", cases)
        def test(case):
            check(case)
        return test
    return tuple(parametrized(c) for c in (check_against_fixture, check_against_torch,
                                          check_float32, check_case_gradients))


def check_compiled_equals_numpy(case, dtype):
    """The layer's compiled kernels (`fast` extra) against its NumPy formula on a case."""
    inputs, _ = split_fixture(case)
    results = []
    for compiled in (False, True):
        with nn.kernels.using(compiled):
            results.append(our_outputs(case, inputs, dtype))
    assert_matches(results[1], results[0], case.name, 1e-6 if dtype == "float32" else 1e-14)

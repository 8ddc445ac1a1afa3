"""Shared by the recipe tests: our outputs against PyTorch's, stored and live."""
import functools

import numpy as np
import pytest

from tests.reference import fixtures, recipe

TORCH = fixtures.torch_or_none()
LIVE_SEED = 1


@functools.lru_cache(maxsize=None)
def stored():
    return fixtures.load("recipe")["recipe"]


@functools.lru_cache(maxsize=None)
def live():
    """(inputs, PyTorch's outputs) on freshly drawn inputs."""
    inputs = recipe.make_inputs(LIVE_SEED)
    return inputs, recipe.torch_outputs(TORCH, inputs)


SOURCES = pytest.mark.parametrize("source", ["fixture", "live"])


def compare(source, prefix, tolerance, ours_of=recipe.our_outputs):
    """Our outputs whose names start with prefix against PyTorch's (the stored "fixture" or
    a "live" run), each array to `tolerance` relative to its largest value."""
    if source == "live":
        if TORCH is None:
            pytest.skip("PyTorch is not installed: the fixture comparison stands in")
        inputs, theirs = live()
    else:
        inputs = theirs = stored()
    ours = ours_of(inputs)
    keys = [k for k in ours if k.startswith(prefix)]
    assert keys, prefix
    for key in keys:
        expected = np.asarray(theirs[key], dtype=np.float64)
        scale = np.abs(expected).max(initial=0.0) or 1.0
        error = np.abs(np.asarray(ours[key], dtype=np.float64) - expected).max() / scale
        assert error < tolerance, f"{key}: relative error {error:.3g}"
    return ours, theirs

"""Every test starts on the CPU in float32 with the backend's random streams seeded, whatever
ran before it and whatever DIST_NN_DEVICE says; tests that need float64 (or a GPU) switch with
`backend.using(...)` inside the test."""
import pytest

from dist_nn import backend

backend.use("cpu", "float32")


@pytest.fixture(autouse=True)
def deterministic_cpu_backend():
    backend.use("cpu", "float32")
    backend.seed(0)
    yield
    backend.use("cpu", "float32")

"""The nn package as a whole: device independence and the coverage of the reference cases."""
import ast
from pathlib import Path

import dist_nn.nn
from dist_nn import nn
from tests.reference import layers

from . import reference_check as check

PACKAGE = Path(dist_nn.nn.__file__).parent
# by design: central differences and the compiled CPU kernels run on the host, BatchNorm's
# CUDA kernels on CuPy alone
ONE_DEVICE = {"gradcheck.py", "kernels.py", "batchnorm_gpu.py"}


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_layers_import_no_array_library_directly():
    """Layers go through dist_nn.backend so the same code runs on NumPy and CuPy."""
    offenders = {path.name: name for path in PACKAGE.glob("*.py") if path.name not in ONE_DEVICE
                 for name in imported_modules(path) if name.split(".")[0] in ("numpy", "cupy")}
    assert offenders == {}


def test_fixture_holds_exactly_the_cases():
    """A case added or renamed without `python -m tests.reference.make_fixtures layers`."""
    assert sorted(check.stored()) == sorted(case.name for case in layers.CASES)


def test_every_exported_layer_has_a_reference_case():
    covered = set()
    for case in layers.CASES:
        built = layers.build_ours(case)
        covered.add(type(built))
        if isinstance(built, nn.Module):
            covered.update(type(m) for _, m in built.named_modules())
    exported = {getattr(nn, name) for name in nn.__all__ if isinstance(getattr(nn, name), type)}
    exported -= {nn.Module, nn.Parameter}
    assert exported - covered == set()


def test_every_case_names_a_file_of_the_package():
    assert {case.module for case in layers.CASES} <= {p.stem for p in PACKAGE.glob("*.py")}
    for case in layers.CASES:
        assert (Path(__file__).parent / f"test_{case.module}.py").exists(), case.module

"""Loading and saving reference fixtures: fixtures/<group>.npz, keys "<case>/<array>"."""
import importlib
from pathlib import Path

import numpy as np

FIXTURE_DIR = Path(__file__).parent / "fixtures"
GROUPS = ("layers", "optim", "schedule", "recipe")


def torch_or_none():
    """The torch module when installed, else None (live comparisons are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_default_dtype(torch.float64)
    return torch


def path(group):
    return FIXTURE_DIR / f"{group}.npz"


def save(group, cases):
    """cases: {case name: {array name: array}} -> fixtures/<group>.npz."""
    FIXTURE_DIR.mkdir(exist_ok=True)
    flat = {f"{case}/{key}": np.asarray(value)
            for case, arrays in cases.items() for key, value in arrays.items()}
    np.savez_compressed(path(group), **flat)


def load(group):
    """{case name: {array name: array}} from fixtures/<group>.npz."""
    cases = {}
    with np.load(path(group)) as data:
        for key in data.files:
            case, name = key.split("/", 1)
            cases.setdefault(case, {})[name] = data[key]
    return cases


def generate(group, torch):
    """Run a group's PyTorch references on its fixed inputs."""
    module = importlib.import_module(f"tests.reference.{group}")
    return module.generate(torch)

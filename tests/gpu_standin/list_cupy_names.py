"""Print the public names of the CuPy namespaces the stand-in mirrors, one `namespace.name` a
line: run with real CuPy importable to (re)make cupy_names.txt, or with the stand-in first on
sys.path to list what the stand-in exposes (tests/test_cupy_standin.py does both)."""
import __future__
import importlib
import os
import sys

# This folder holds the stand-in: list the `cupy` the environment gives (real CuPy, or the
# stand-in through PYTHONPATH), not the one the script's own folder would shadow it with.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

NAMESPACES = ("cupy", "cupy.ndarray", "cupy.ufunc", "cupy.cuda", "cupy.cuda.Device",
              "cupy.cuda.Stream", "cupy.cuda.Event", "cupy.cuda.MemoryPointer",
              "cupy.cuda.runtime", "cupy.cuda.nccl", "cupy.cuda.nccl.NcclCommunicator",
              "cupy.random", "cupy.random.Generator", "cupy.linalg", "cupy.lib",
              "cupy.lib.stride_tricks", "cupyx")
# Served by a module-level __getattr__, which dir() does not show.
LAZY = {"cupy.random": ("Generator",)}


def resolve(namespace):
    """The module or class named `namespace`, or None where this installation lacks it."""
    parts = namespace.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part, None)
        return found
    return None


def public_names(namespace):
    found = resolve(namespace)
    if found is None:
        return []
    names = {n for n in dir(found) if not n.startswith("_")}
    names |= {n for n in LAZY.get(namespace, ()) if getattr(found, n, None) is not None}
    # `from __future__ import annotations` leaves a compiler flag, not an API, in a module
    return sorted(n for n in names
                  if not isinstance(getattr(found, n, None), __future__._Feature))


def main():
    for namespace in NAMESPACES:
        for name in public_names(namespace):
            sys.stdout.write(f"{namespace}.{name}\n")


if __name__ == "__main__":
    main()

"""Real CuPy's public names (../cupy_names.txt): the stand-in exposes nothing outside them."""
import collections
from pathlib import Path

NAMES_FILE = Path(__file__).resolve().parent.parent / "cupy_names.txt"


def _load():
    names = collections.defaultdict(set)
    for line in NAMES_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            namespace, _, name = line.rpartition(".")
            names[namespace].add(name)
    return {namespace: frozenset(found) for namespace, found in names.items()}


LISTED = _load()


def listed(namespace):
    """The public names real CuPy has in `namespace` (a module or class, e.g. "cupy.ndarray")."""
    return LISTED.get(namespace, frozenset())

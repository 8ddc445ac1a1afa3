"""dist_nn: data-parallel training of neural networks on NumPy/CuPy with MPI."""
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Trainer", "__version__"]

if TYPE_CHECKING:  # for type checkers and "go to definition"; at run time, loaded on first use
    from .trainer import Trainer


def __getattr__(name):
    """`dist_nn.Trainer` on first use: importing any submodule (dist_nn.signals first of all,
    before NumPy and MPI) must not load the whole trainer."""
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(f"module 'dist_nn' has no attribute {name!r}")

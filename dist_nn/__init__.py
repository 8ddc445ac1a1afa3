"""dist_nn: data-parallel training of neural networks on NumPy/CuPy with MPI."""
__version__ = "0.1.0"


def __getattr__(name):  # `dist_nn.Trainer` without importing the trainer for every submodule
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(f"module 'dist_nn' has no attribute {name!r}")

"""dist_nn: data-parallel training of neural networks on NumPy/CuPy with MPI."""
__version__ = "0.1.0"

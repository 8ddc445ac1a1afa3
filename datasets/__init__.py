"""Converters from users' data to dist_nn's HDF5 layout (docs/design.md §3.4), one module
per format, each with `convert(...) -> list of written paths`; run them as
`python -m datasets FORMAT ...` (installed, this folder is `dist_nn.datasets` (setup.py) and
the command dist-nn-convert).
Every converter writes through dist_nn.data.DatasetWriter and raises ValueError, naming the
file and what is wrong, for malformed input."""

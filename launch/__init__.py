"""Launch helpers: the local mpiexec wrapper and (later) hyper-parameter search."""

"""Launch helpers: the local mpiexec wrapper (mpirun) and hyper-parameter search (search).
In the repository `python -m launch.mpirun`; installed, this folder is `dist_nn.launch`
(setup.py) and the commands are dist-nn-mpirun and dist-nn-search."""

"""PyTorch (CPU) references for the layer core, optimizers and schedules.

Each group module here (layers, optim, schedule) defines its cases, how to draw a case's
inputs, and how PyTorch computes its outputs. `make_fixtures` stores inputs and PyTorch's
outputs in fixtures/<group>.npz, so the comparisons run without torch; with torch installed
the tests also compare live on freshly drawn inputs.
"""

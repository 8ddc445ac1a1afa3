"""Optimizers on flat parameter buffers, and learning-rate/momentum schedules."""
from .flat import FlatParameters
from .optimizers import OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedule import (SCHEDULES, Constant, CosineDecay, ExponentialDecay, InverseTimeDecay,
                       MomentumRamp, MultiStepDecay, PlateauDecay, Schedule, StepDecay, Warmup)

__all__ = ["FlatParameters", "OPTIMIZERS", "SGD", "Adadelta", "Adagrad", "Adam", "AdamW",
           "Optimizer", "RMSprop", "SCHEDULES", "Constant", "CosineDecay", "ExponentialDecay",
           "InverseTimeDecay", "MomentumRamp", "MultiStepDecay", "PlateauDecay", "Schedule",
           "StepDecay", "Warmup"]

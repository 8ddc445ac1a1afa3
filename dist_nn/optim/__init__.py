"""Optimizers on flat parameter buffers, and learning-rate/momentum schedules."""
from .clip import clip_grad_norm, grad_norm, squared_norm
from .ema import WeightEMA
from .flat import FlatParameters, FlatShard
from .optimizers import OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .recipe import StepRecipe
from .scaler import LossScaler
from .schedule import (SCHEDULES, Constant, CosineDecay, ExponentialDecay, InverseTimeDecay,
                       MomentumRamp, MultiStepDecay, PlateauDecay, Schedule, StepDecay, Warmup)

__all__ = ["FlatParameters", "FlatShard", "LossScaler", "OPTIMIZERS", "SGD", "Adadelta",
           "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SCHEDULES", "Constant", "CosineDecay",
           "ExponentialDecay", "InverseTimeDecay", "MomentumRamp", "MultiStepDecay",
           "PlateauDecay", "Schedule", "StepDecay", "StepRecipe", "Warmup", "WeightEMA",
           "clip_grad_norm", "grad_norm", "squared_norm"]

"""Saved state, checked before it is used: every part of a run that saves itself in a
checkpoint (schedules, guards, the loss scaler, the trainer's position and watches) loads what
it saved through `checked`, because a file can lie even under a valid checksum. A part's
`load_state_dict` raises ValueError naming the part and the entry; the trainer turns it into
"cannot resume from FILE: ..." (docs/design.md §3.5)."""
import math

import numpy


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# kind -> (valid?, what it must be)
COUNT = (_count, "a count")
NUMBER = (_number, "a finite number")
POSITIVE = (lambda v: _number(v) and v > 0, "a finite number > 0")
NUMBER_OR_INFINITY = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and not math.isnan(v), "a number or +-Infinity")
NUMBER_OR_NONE = (lambda v: v is None or _number(v), "a finite number or null")
TEXT = (lambda v: isinstance(v, str), "text")
FLAG = (lambda v: isinstance(v, bool), "true or false")
OBJECT = (lambda v: isinstance(v, dict), "an object")
OBJECT_OR_NONE = (lambda v: v is None or isinstance(v, dict), "an object or null")
OBJECTS = (lambda v: isinstance(v, list) and all(isinstance(d, dict) for d in v),
           "a list of objects")


def checked(state, part, **kinds):
    """`state`, the saved state of `part`, once it is an object holding every entry of
    `kinds` (name -> kind), each of its kind; else ValueError saying which and why."""
    if not isinstance(state, dict):
        raise ValueError(f"{part} must be an object, got {str(state)[:60]!r}")
    for name, (valid, what) in kinds.items():
        if name not in state:
            raise ValueError(f"{part} lacks the entry {name!r}")
        if not valid(state[name]):
            raise ValueError(f"{part}: {name} must be {what}, got {str(state[name])[:60]!r}")
    return state


def checked_arrays(arrays, part, shapes):
    """`arrays` ({name: array}) of `part` once it holds exactly the names of `shapes` (name ->
    shape, or None for any), each of that shape and finite; else ValueError."""
    if not isinstance(arrays, dict) or set(arrays) != set(shapes):
        names = sorted(arrays) if isinstance(arrays, dict) else arrays
        raise ValueError(f"{part} must hold the arrays {sorted(shapes)}, got {str(names)[:80]}")
    for name, shape in shapes.items():
        array = arrays[name]
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ValueError(f"{part}: {name} has shape {tuple(array.shape)}, expected "
                             f"{tuple(shape)}")
        if array.dtype.kind != "f" or not numpy.isfinite(array).all():
            raise ValueError(f"{part}: {name} must hold finite floating-point numbers")
    return arrays

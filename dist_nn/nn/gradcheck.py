"""Central-difference gradient check of a module's backward (float64 only).

The objective is the given loss or, without one, sum(forward(x) * R) for a fixed random R.
Random streams are re-seeded before every forward so that dropout draws the same mask each
time, and parameters/buffers are restored afterwards.

An entry that sits on a kink or tie of the forward (ReLU at 0, equal values in a max-pool
window: a flat image background) has no derivative: its two one-sided differences disagree
however small the step. Such entries are left out of the comparison and counted (`kinks`),
so that correct code is never called wrong; on a smooth entry the one-sided differences
disagree by eps * f'', which halves with the step.
"""
import numpy

from .. import backend


# a gap between the one-sided slopes worth a second look: 1e-3 of the slopes, and far above
# the rounding of the objective (~1e-13 of it, over eps = 1e-6: 1e-7)
KINK_RTOL, KINK_ATOL = 1e-3, 1e-6


def relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||) of host arrays, 0 when both vanish."""
    denominator = numpy.linalg.norm(analytic) + numpy.linalg.norm(numeric)
    return float(numpy.linalg.norm(analytic - numeric) / denominator) if denominator > 0 else 0.0


class Errors(dict):
    """{"input": err, parameter name: err}, and `kinks`: {name: entries left out}."""

    def __init__(self):
        super().__init__()
        self.kinks = {}


def check_gradients(module, x, loss=None, target=None, eps=1e-6, max_entries=None, seed=0):
    """Errors: {"input": err, parameter name: err} of analytic against numerical gradients,
    and `.kinks`, the entries on a kink of the forward (left out) per name.

    max_entries: check at most this many randomly chosen entries per array (whole models);
    None checks every entry (single layers).
    """
    xp = backend.get_array_module(x)
    if x.dtype != xp.float64:
        raise ValueError("gradient checks need float64 inputs and parameters "
                         "(central differences in float32 are dominated by rounding)")
    x = xp.ascontiguousarray(x)  # perturbations go through a flat view
    state = module.state_dict()
    probe = None

    def objective():
        nonlocal probe
        backend.seed(seed)
        y = module.forward(x)
        if loss is not None:
            return float(loss.forward(y, target)), y
        if probe is None:
            probe = xp.asarray(numpy.random.default_rng(seed).standard_normal(y.shape))
        return float((y * probe).sum()), y

    module.zero_grad()
    base, y = objective()
    dy = loss.backward() if loss is not None else probe
    analytic = {"input": module.backward(dy)}
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    analytic.update({n: p.grad.copy() for n, p in named})

    def nudged(flat, i, step):
        saved = float(flat[i])
        flat[i] = saved + step
        plus, _ = objective()
        flat[i] = saved - step
        minus, _ = objective()
        flat[i] = saved
        return (plus - base) / step, (base - minus) / step  # right and left slopes

    errors = Errors()
    picker = numpy.random.default_rng(seed)
    for name, array in [("input", x)] + [(n, p.data) for n, p in named]:
        flat = array.reshape(-1)  # a view: perturbing it perturbs the array
        count = flat.size if max_entries is None else min(max_entries, flat.size)
        entries = picker.choice(flat.size, size=count, replace=False)
        numeric, smooth = numpy.empty(count), numpy.ones(count, dtype=bool)
        for k, i in enumerate(entries.tolist()):
            right, left = nudged(flat, i, eps)
            numeric[k] = (right + left) / 2
            gap = abs(right - left)
            if gap > KINK_RTOL * (abs(right) + abs(left)) + KINK_ATOL * (abs(base) + 1):
                right, left = nudged(flat, i, eps / 2)  # a kink's gap does not shrink
                smooth[k] = abs(right - left) < 0.75 * gap
        picked = backend.to_host(analytic[name].reshape(-1)[xp.asarray(entries)])
        errors[name] = relative_error(picked[smooth], numeric[smooth])
        errors.kinks[name] = int(count - smooth.sum())
    module.load_state_dict(state)
    return errors

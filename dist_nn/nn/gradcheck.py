"""Central-difference gradient check of a module's backward (float64 only).

The objective is the given loss or, without one, sum(forward(x) * R) for a fixed random R.
Random streams are re-seeded before every forward so that dropout draws the same mask each
time, and parameters/buffers are restored afterwards.
"""
import numpy

from .. import backend


def relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||) of host arrays, 0 when both vanish."""
    denominator = numpy.linalg.norm(analytic) + numpy.linalg.norm(numeric)
    return float(numpy.linalg.norm(analytic - numeric) / denominator) if denominator > 0 else 0.0


def check_gradients(module, x, loss=None, target=None, eps=1e-6, max_entries=None, seed=0):
    """{"input": err, parameter name: err} of analytic against numerical gradients.

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
    _, y = objective()
    dy = loss.backward() if loss is not None else probe
    analytic = {"input": module.backward(dy)}
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    analytic.update({n: p.grad.copy() for n, p in named})

    errors = {}
    picker = numpy.random.default_rng(seed)
    for name, array in [("input", x)] + [(n, p.data) for n, p in named]:
        flat = array.reshape(-1)  # a view: perturbing it perturbs the array
        count = flat.size if max_entries is None else min(max_entries, flat.size)
        entries = picker.choice(flat.size, size=count, replace=False)
        numeric = numpy.empty(count)
        for k, i in enumerate(entries.tolist()):
            saved = float(flat[i])
            flat[i] = saved + eps
            plus, _ = objective()
            flat[i] = saved - eps
            minus, _ = objective()
            flat[i] = saved
            numeric[k] = (plus - minus) / (2 * eps)
        picked = backend.to_host(analytic[name].reshape(-1)[xp.asarray(entries)])
        errors[name] = relative_error(picked, numeric)
    module.load_state_dict(state)
    return errors

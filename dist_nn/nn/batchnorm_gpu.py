"""BatchNorm on a GPU: the formulas of batchnorm.py, each pass one CuPy kernel (CUDA C++
through cupy.ElementwiseKernel / ReductionKernel), so that a layer in training launches 3
kernels forward and 3 backward (plus one collective each way when synchronised) instead of
~50 and ~35 small array operations (docs/design.md §3.10).

Forward: one reduction gives per channel [sum x, sum x^2, count] (float64 sums: E[x^2] -
E[x]^2 then keeps float32 data's variance without cancellation); one kernel over the
channels turns them (allreduced, in SyncBN) into mean, 1/std and scale, and updates the
running statistics and num_batches_tracked; one pass writes y = (x - mean) * scale + bias
(then the fused ReLU). Backward: one reduction gives [sum g, sum g * (x - mean)] with g the
gradient through the ReLU; one kernel over the channels adds the parameter gradients and forms
dx = gain * g + slope * (x - mean) + constant; one pass writes dx.

In SyncBN the parameter gradients are the global sums divided by the number of ranks: the
gradient allreduce then sums them to what the local shares would sum to, without keeping the
local sums apart. Tests (tests/nn/test_batchnorm_gpu.py) hold this path equal to the NumPy one
on the CuPy stand-in, whose kernels are the same C++ compiled for the host.
"""
import functools

from .. import backend

# Rows of the statistics reductions: a selector array broadcast against the input, so that one
# reduction kernel writes several per-channel sums.
FORWARD_ROWS, BACKWARD_ROWS = 3, 2


@functools.cache
def _kernels():
    import cupy
    return {
        # row 0: sum x, row 1: sum x^2, row 2: the count
        "statistics": cupy.ReductionKernel(
            "T x, int32 row", "float64 total",
            "row == 0 ? (double)x : (row == 1 ? (double)x * (double)x : 1.0)",
            "a + b", "total = a", "0", "batchnorm_statistics", reduce_type="double"),
        "coefficients": cupy.ElementwiseKernel(
            "float64 sum, float64 sum_sq, float64 count, T weight, float64 momentum, "
            "float64 eps, int32 training, int32 count_batch",
            "float64 mean, float64 inv_std, T scale, T running_mean, T running_var, "
            "raw int64 tracked",
            """
            double m, var;
            if (training) {
                m = sum / count;
                var = sum_sq / count - m * m;
                var = var < 0 ? 0.0 : var;  // rounding only; NaN passes
                // momentum < 0: the cumulative average (num_batches_tracked counted before)
                double f = momentum < 0 ? 1.0 / (double)tracked[0] : momentum;
                running_mean = (T)((1.0 - f) * (double)running_mean + f * m);
                running_var = (T)((1.0 - f) * (double)running_var + f * var * count / (count - 1.0));
                if (count_batch && i == 0) tracked[0] += 1;
            } else {
                m = (double)running_mean;
                var = (double)running_var;
            }
            double r = 1.0 / sqrt(var + eps);
            mean = m;
            inv_std = r;
            scale = (T)((double)weight * r);
            """, "batchnorm_coefficients"),
        "normalize": cupy.ElementwiseKernel(
            "T x, float64 mean, T scale, T bias, int32 relu", "T y",
            "double v = ((double)x - mean) * (double)scale + (double)bias; "
            "y = (relu && v < 0.0) ? (T)0 : (T)v",
            "batchnorm_normalize"),
        # row 0: sum g, row 1: sum g * (x - mean); g: dy through the fused ReLU
        "gradient_sums": cupy.ReductionKernel(
            "T dy, T x, T y, float64 mean, int32 row, int32 relu", "float64 total",
            "(relu && !(y > (T)0)) ? 0.0 : (row == 0 ? (double)dy : "
            "(double)dy * ((double)x - mean))",
            "a + b", "total = a", "0", "batchnorm_gradient_sums", reduce_type="double"),
        "gradient_coefficients": cupy.ElementwiseKernel(
            "float64 sum_g, float64 sum_gc, float64 inv_std, T weight, float64 count, "
            "float64 share, "
            "int32 training",
            "T bias_grad, T weight_grad, T gain, T slope, T constant",
            """
            double sum_g_xhat = sum_gc * inv_std;
            bias_grad += (T)(sum_g * share);
            weight_grad += (T)(sum_g_xhat * share);
            double g = (double)weight * inv_std;
            gain = (T)g;
            slope = (T)(training ? -g * sum_g_xhat / count * inv_std : 0.0);
            constant = (T)(training ? -g * sum_g / count : 0.0);
            """, "batchnorm_gradient_coefficients"),
        "input_grad": cupy.ElementwiseKernel(
            "T dy, T x, T y, float64 mean, T gain, T slope, T constant, int32 relu", "T dx",
            "double g = (relu && !(y > (T)0)) ? 0.0 : (double)dy; "
            "dx = (T)((double)gain * g + (double)slope * ((double)x - mean) + (double)constant)",
            "batchnorm_input_grad"),
    }


def usable(*arrays):
    """True for CuPy arrays of float32 or float64 (BatchNorm's master dtypes)."""
    return all(backend.on_gpu(a) and a.dtype.kind == "f" and a.dtype.itemsize >= 4
               for a in arrays)


@functools.cache
def _rows(count, device_id):
    """The selector 0..count-1 on a device, made once (an upload at the first use)."""
    import cupy
    with cupy.cuda.Device(device_id):
        return cupy.arange(count, dtype=cupy.int32)


def _per_channel(layer, array):
    """A (C,) array shaped to broadcast against the layer's 3-D view of x (a scalar as is)."""
    if not backend.on_gpu(array):
        return array
    return array.reshape((1, -1, 1) if layer.layout == "ncl" else (1, 1, -1))


def _reduce(layer, kernel, rows, arrays, scalars, out):
    """kernel(*arrays, selector, *scalars) summed over the batch and positions into out
    (rows, C): the 3-D views gain a leading axis, which the selector fills."""
    selector = _rows(rows, arrays[0].device.id).reshape(rows, 1, 1, 1)
    axes = (1, 3) if layer.layout == "ncl" else (1, 2)
    kernel(*[a[None] for a in arrays], selector, *scalars, out=out, axis=axes)


def forward(layer, x3):
    """y3 (a new array) for the 3-D view x3; keeps what backward needs on the layer."""
    xp, k, c = backend.get_array_module(x3), _kernels(), layer.num_features
    dtype = x3.dtype
    weight = layer.weight.data if layer.weight is not None else dtype.type(1)
    bias = layer.bias.data if layer.bias is not None else dtype.type(0)
    mean, inv_std, scale = xp.empty(c), xp.empty(c), xp.empty(c, dtype)
    if layer.training:
        stats = xp.empty((FORWARD_ROWS, c), dtype=xp.float64)
        _reduce(layer, k["statistics"], FORWARD_ROWS, [x3], [], stats)
        if layer.synced:
            layer.comm.allreduce(stats.reshape(-1))
        cumulative = layer.momentum is None
        if cumulative:
            layer.num_batches_tracked += 1
        k["coefficients"](stats[0], stats[1], stats[2], weight,
                          -1.0 if cumulative else layer.momentum, layer.eps, 1, int(not cumulative),
                          mean, inv_std, scale, layer.running_mean, layer.running_var,
                          layer.num_batches_tracked)
        layer.count = stats[2]
    else:
        k["coefficients"](0.0, 0.0, 0.0, weight, 0.0, layer.eps, 0, 0, mean, inv_std, scale,
                          layer.running_mean, layer.running_var, layer.num_batches_tracked)
        layer.count = None
    y3 = xp.empty_like(x3)
    k["normalize"](x3, _per_channel(layer, mean), _per_channel(layer, scale),
                   _per_channel(layer, bias), int(layer.relu), y3)
    layer.keep(x=x3, y=y3 if layer.relu else None, mean=mean, inv_std=inv_std)
    return y3


def backward(layer, dy3):
    """dx3 for the 3-D view dy3 (in forward's layout); adds the parameter gradients."""
    xp, k, c = backend.get_array_module(dy3), _kernels(), layer.num_features
    x3, dtype = layer.kept(layer.x), dy3.dtype
    y3 = layer.y if layer.relu else dy3  # the ReLU's derivative comes from its output
    mean = _per_channel(layer, layer.mean)
    sums = xp.empty((BACKWARD_ROWS, c), dtype=xp.float64)
    _reduce(layer, k["gradient_sums"], BACKWARD_ROWS, [dy3, x3, y3, mean], [int(layer.relu)],
            sums)
    training = layer.count is not None
    share = 1.0
    if training and layer.synced:
        layer.comm.allreduce(sums.reshape(-1))
        share = 1.0 / layer.comm.size
    if layer.weight is not None:
        bias_grad, weight_grad, weight = layer.bias.grad, layer.weight.grad, layer.weight.data
    else:
        bias_grad, weight_grad, weight = xp.empty(c, dtype), xp.empty(c, dtype), dtype.type(1)
    gain, slope, constant = (xp.empty(c, dtype) for _ in range(3))
    k["gradient_coefficients"](sums[0], sums[1], layer.inv_std, weight,
                               layer.count if training else 1.0, share, int(training),
                               bias_grad, weight_grad, gain, slope, constant)
    dx3 = xp.empty(dy3.shape, dtype=dtype)
    k["input_grad"](dy3, x3, y3, mean, _per_channel(layer, gain), _per_channel(layer, slope),
                    _per_channel(layer, constant), int(layer.relu), dx3)
    return dx3

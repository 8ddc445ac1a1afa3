"""Mixed precision (dist_nn/nn/amp.py): one float16 step of the CNN against PyTorch's CPU
autocast, the dtypes inside, and the model untouched outside."""
import numpy as np
import pytest

from dist_nn import nn, optim
from dist_nn.nn import amp
from tests.reference import recipe
from tests.reference import recipe_check as check



UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}


@check.SOURCES
@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_cnn_step_matches_torch_autocast(source, mode):
    """Loss and every parameter gradient of one (for fp16: loss-scaled) mixed-precision step
    of the CNN against torch.autocast("cpu", float16 / bfloat16) from the same weights.

    Tolerance: both are half-precision computations of the same step, so each differs from
    the exact (float64) step by half-precision rounding (unit roundoff u: 2^-11 for float16,
    2^-8 for bfloat16) carried through the layers; BatchNorm's backward, a difference of
    nearly equal terms, amplifies it (PyTorch's own error reaches 2-5u in float16 and 25-40u
    in bfloat16 here). The two roundings differ only in order and accumulation, so we require
    |ours - torch| < 6u relative to each gradient's largest value (measured: < 3u), and ours
    no further from the exact step than 2x PyTorch's largest error. Ours must also be
    visibly half precision (> 100x float32's error): a silent float32 computation fails."""
    if mode == "bf16":
        pytest.importorskip("ml_dtypes", reason="bf16 needs the bf16 extra (ml_dtypes)")
    u = UNIT_ROUNDOFF[mode]
    ours, theirs = check.compare(source, mode + ".", 6 * u,
                                 ours_of=lambda inputs: recipe.amp_step(inputs, mode))
    exact = {k[len("exact."):]: v for k, v in theirs.items() if k.startswith("exact.")}
    scale = {k: np.abs(v).max() for k, v in exact.items()}
    torch_error = max(np.abs(theirs[f"{mode}.{k}"] - v).max() / scale[k] for k, v in exact.items())
    our_errors = [np.abs(ours[f"{mode}.{k}"] - v).max() / scale[k] for k, v in exact.items()]
    assert max(our_errors) < 2 * torch_error
    assert max(our_errors) > 100 * np.finfo(np.float32).eps


def small_cnn():
    model = recipe.build_cnn("float32")
    return model, optim.FlatParameters(model.parameters())


def test_inside_half_precision_outside_untouched():
    model, flat = small_cnn()
    autocast = nn.amp.Autocast(model, flat, "fp16")
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    seen = {}  # hooks added before autocast run around its casting classes (float32 x -> half)
    for name, module in model.named_modules():
        module.add_forward_hook(lambda m, y, name=name: seen.__setitem__(name, y.dtype))
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    loss_fn = nn.SoftmaxCrossEntropy()
    with autocast():
        assert model[0].weight.data.dtype == np.float16
        assert model[1].weight.data.dtype == np.float32  # BatchNorm's stay float32
        loss_fn.forward(model.forward(x), np.arange(4))
        model.backward(loss_fn.backward())
    assert seen["0"] == seen["1"] == seen["12"] == np.float16  # BatchNorm returns half too
    assert model[1].running_mean.dtype == np.float32
    assert flat.grad.dtype == np.float32 and np.abs(flat.grad).max() > 0
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    assert type(model[1]) is nn.BatchNorm2d and type(model[0]) is nn.Conv2d
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
    assert model.forward(x).dtype == np.float32


def test_bf16_without_ml_dtypes_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(amp.PrecisionError, match="bf16 needs the ml_dtypes package"):
        amp.half_dtype("bf16")

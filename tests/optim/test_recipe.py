"""StepRecipe (dist_nn/optim/recipe.py): skipped overflow steps, clipping after unscaling,
EMA updates on taken steps only, evaluation with the EMA weights."""
import numpy as np

from dist_nn import backend, nn, optim


def setup(**options):
    with backend.using("cpu", "float32"):
        backend.seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    return model, opt, optim.StepRecipe(model, opt, **options)


def backward(model, recipe, x):
    loss = nn.SoftmaxCrossEntropy()
    recipe.optimizer.zero_grad()
    with recipe.autocast():
        loss.forward(model.forward(x), np.arange(len(x)) % 3)
        model.backward(recipe.scale(loss.backward()))


def test_overflow_step_is_skipped_and_the_scale_halved():
    model, opt, recipe = setup(amp="fp16", clip_grad_norm=1.0, ema_decay=0.5)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    before = opt.flat.data.copy()
    ema_before = recipe.ema.params.copy()
    recipe.scaler.scale = 2.0**40  # the scaled loss gradient overflows float16
    backward(model, recipe, x)
    assert recipe.unscale() is True
    assert recipe.step() is None
    np.testing.assert_array_equal(opt.flat.data, before)
    np.testing.assert_array_equal(recipe.ema.params, ema_before)
    assert recipe.state_dict() == {"scaler": {"scale": 2.0**39, "growth_tracker": 0}}


def test_clean_step_clips_the_unscaled_gradient_and_updates_the_ema():
    model, opt, recipe = setup(amp="fp16", clip_grad_norm=0.01, ema_decay=0.5)
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    backward(model, recipe, x)
    assert recipe.unscale() is False
    before = opt.flat.data.copy()
    norm = recipe.step()
    assert 0.01 < norm < 100  # unscaled: the scale 2^16 is gone
    np.testing.assert_allclose(np.linalg.norm(opt.flat.data - before), 0.1 * 0.01, rtol=1e-3)
    np.testing.assert_allclose(recipe.ema.params, 0.5 * (before + opt.flat.data), rtol=1e-6)
    with recipe.evaluation_weights():
        np.testing.assert_array_equal(opt.flat.data, recipe.ema.params)
    assert not np.array_equal(opt.flat.data, recipe.ema.params)


def test_all_off_is_a_plain_step():
    model, opt, recipe = setup()
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    backward(model, recipe, x)
    expected = opt.flat.data - 0.1 * opt.flat.grad
    assert recipe.unscale() is False
    np.testing.assert_allclose(recipe.step(), np.linalg.norm(opt.flat.grad), rtol=1e-6)
    np.testing.assert_array_equal(opt.flat.data, expected)
    assert recipe.state_dict() == {"scaler": None}

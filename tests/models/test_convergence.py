"""Convergence on real data: the `cnn` model, trained with the library API alone, learns
scikit-learn's bundled handwritten digits (1797 8x8 images, no download)."""
import numpy as np
import pytest

from dist_nn import backend, models, nn, optim

sklearn_datasets = pytest.importorskip("sklearn.datasets",
                                       reason="the dev extra's scikit-learn is not installed")


def split_digits(seed=0):
    digits = sklearn_datasets.load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    held_out = len(x) // 5
    test, train = order[:held_out], order[held_out:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def accuracy(model, x, y):
    model.eval()
    correct = int((model.forward(x).argmax(axis=1) == y).sum())
    model.train()
    return correct / len(y)


@pytest.mark.slow
def test_cnn_reaches_97_percent_on_held_out_digits():
    x_train, y_train, x_test, y_test = split_digits()
    backend.seed(0)
    model = models.build("cnn", (1, 8, 8), 10, channels=(32, 64), hidden=128, dropout=0.3)
    loss = nn.SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    epochs, batch = 12, 64
    steps_per_epoch = len(x_train) // batch
    schedule = optim.CosineDecay(opt, total=epochs * steps_per_epoch)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            opt.zero_grad()
            loss.forward(model.forward(x_train[idx]), y_train[idx])
            model.backward(loss.backward())
            opt.step()
            schedule.step()
    assert accuracy(model, x_train, y_train) > 0.99
    assert accuracy(model, x_test, y_test) >= 0.97

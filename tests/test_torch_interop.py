"""Converting a saved PyTorch state dict into a checkpoint that initialises a dist_nn model."""
import numpy as np
import pytest

from dist_nn import checkpoint, config, models
from dist_nn.build import transfer_weights

torch = pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")
from dist_nn import torch_interop  # noqa: E402


def test_a_pytorch_state_dict_initialises_the_model(tmp_path):
    source = models.build("cnn", (1, 8, 8), 10)
    twin = torch_interop.to_torch_module(source)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(-3.0)
    torch.save({"state_dict": twin.state_dict(), "epoch": 7}, tmp_path / "model.pt")
    assert torch_interop.main([str(tmp_path / "model.pt"), str(tmp_path / "model.h5")]) == 0
    state, optimizer, meta = checkpoint.read(tmp_path / "model.h5")
    assert optimizer is None or optimizer["buffers"] == {}
    assert "PyTorch" in meta["source"]
    target = models.build("cnn", (1, 8, 8), 10)
    assert "initialised from" in transfer_weights(target, tmp_path / "model.h5")
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        np.testing.assert_allclose(b.data, -3.0 * a.data, err_msg=name)


def test_not_a_state_dict_is_refused(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert torch_interop.main([str(tmp_path / "list.pt"), str(tmp_path / "x.h5")]) == 2
    assert "holds no state dict of tensors" in capsys.readouterr().err


def test_init_from_a_checkpoint_that_does_not_fit(tmp_path):
    checkpoint.write(tmp_path / "mlp.h5", models.build("mlp", (4,), 3, hidden=(5,)).state_dict())
    with pytest.raises(config.ConfigError, match="does not fit this model"):
        transfer_weights(models.build("mlp", (4,), 3, hidden=(6,)), tmp_path / "mlp.h5")


def test_a_converted_checkpoint_is_evaluated_once_its_model_is_named(tmp_path):
    """A checkpoint converted from PyTorch holds weights only: evaluate says in one line
    what is missing, and with model.name it evaluates the weights."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    twin = torch_interop.to_torch_module(models.build("cnn", (1, 8, 8), 10))
    torch.save(twin.state_dict(), tmp_path / "cnn.pt")
    assert torch_interop.main([str(tmp_path / "cnn.pt"), str(tmp_path / "cnn.h5")]) == 0

    def evaluate(*overrides):
        return subprocess.run([sys.executable, "-m", "dist_nn.evaluate", str(tmp_path / "cnn.h5"),
                               "--data", "digits", *overrides], capture_output=True, text=True,
                              cwd=root, timeout=120)
    done = evaluate()
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "holds weights only, no training config (converted from PyTorch?): name its " \
           "model, e.g. model.name=resnet20" in done.stderr
    done = evaluate("model.name=cnn", "model.fc=256")  # the builder's default width
    assert done.returncode == 0, done.stderr
    assert "on digits (val, 359 samples): loss " in done.stdout

"""Checkpoints: content, checksum, atomic writes, keeping the newest, falling back."""
import numpy as np
import pytest

from dist_nn import checkpoint, models, optim


def content():
    model = models.build("mlp", (4,), 3, hidden=(5,), batch_norm=True)
    opt = optim.Adam(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    return model.state_dict(), opt.state_dict(), {"epoch": 2, "step": 7, "samples": 64}


def test_round_trip(tmp_path):
    model, opt, meta = content()
    path = checkpoint.write(tmp_path / "c.h5", model, opt, meta)
    model2, opt2, meta2 = checkpoint.read(path)
    assert list(model2) == list(model) and meta2["step"] == 7 and "dist_nn_version" in meta2
    for name in model:
        np.testing.assert_array_equal(model2[name], model[name])
    assert opt2["step"] == 1 and opt2["hyperparameters"]["lr"] == 0.1
    np.testing.assert_array_equal(opt2["buffers"]["exp_avg"], opt["buffers"]["exp_avg"])
    assert not list(tmp_path.glob("*.partial"))


def corrupt(path):
    """Flip one byte inside the first weight's data."""
    import h5py
    with h5py.File(path, "r") as f:
        offset = f["model/1.weight"].id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_and_truncation_are_detected(tmp_path):
    model, opt, meta = content()
    path = checkpoint.write(tmp_path / "c.h5", model, opt, meta)
    corrupt(path)
    with pytest.raises(checkpoint.CheckpointError, match="corrupted: its checksum does not match"):
        checkpoint.read(path)
    path = checkpoint.write(tmp_path / "d.h5", model, opt, meta)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or damaged"):
        checkpoint.read(path)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.read(tmp_path / "none.h5")


def test_keep_the_newest_and_fall_back_past_damaged_ones(tmp_path):
    model, opt, meta = content()
    for step in (10, 20, 30, 40):
        checkpoint.save_step(tmp_path, step, model, opt, {**meta, "step": step}, keep=3)
    assert [s for s, _ in checkpoint.step_checkpoints(tmp_path)] == [40, 30, 20]
    corrupt(tmp_path / "step-000000040.h5")
    warnings = []
    path, (_, _, found) = checkpoint.newest_valid(tmp_path, warn=warnings.append)
    assert found["step"] == 30 and path.name == "step-000000030.h5"
    assert warnings[0].startswith(f"warning: skipping {tmp_path / 'step-000000040.h5'}: ")
    assert "checksum does not match" in warnings[0]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    model, opt, meta = content()
    checkpoint.write(tmp_path / "c.h5", model, opt, meta)
    with pytest.raises(TypeError):
        checkpoint.write(tmp_path / "c.h5", model, opt, {"unserialisable": object()})
    assert checkpoint.read(tmp_path / "c.h5")[2]["step"] == 7
    assert not list(tmp_path.glob("*.partial"))


def test_averaged_weights_round_trip_and_are_under_the_checksum(tmp_path):
    model, opt, meta = content()
    ema = {name: value * 0.5 for name, value in model.items()}
    path = checkpoint.write(tmp_path / "c.h5", model, opt, meta, ema)
    contents = checkpoint.read(path)
    assert list(contents.ema) == list(model)
    for name in ema:
        np.testing.assert_array_equal(contents.ema[name], ema[name])
    assert checkpoint.read(checkpoint.write(tmp_path / "d.h5", model, opt, meta)).ema is None
    import h5py
    with h5py.File(path, "r+") as f:  # change one averaged weight
        f["ema/1.weight"][0, 0] += 1.0
    with pytest.raises(checkpoint.CheckpointError, match="checksum does not match"):
        checkpoint.read(path)

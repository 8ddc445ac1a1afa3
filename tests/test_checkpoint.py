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


def test_pruning_counts_only_well_formed_step_files(tmp_path):
    """A directory or a pipe named like a newer step checkpoint never pushes the real ones
    out of the newest `keep`."""
    import os
    model, opt, meta = content()
    (tmp_path / "step-999999998.h5").mkdir()
    os.mkfifo(tmp_path / "step-999999999.h5")
    (tmp_path / "step-12x.h5").write_text("")
    for step in (10, 20):
        checkpoint.save_step(tmp_path, step, model, opt, {**meta, "step": step}, keep=2)
    assert [s for s, _ in checkpoint.step_checkpoints(tmp_path)] == [20, 10]
    assert (tmp_path / "step-999999998.h5").is_dir()
    assert [p.name for p in checkpoint.all_checkpoints(tmp_path)] == \
        ["step-000000020.h5", "step-000000010.h5"]


def test_a_checkpoint_without_its_checksum_is_refused(tmp_path):
    import h5py
    model, opt, meta = content()
    for step in (10, 20):
        checkpoint.save_step(tmp_path, step, model, opt, {**meta, "step": step}, keep=2)
    with h5py.File(tmp_path / "step-000000020.h5", "a") as f:
        del f.attrs["checksum"]
    with pytest.raises(checkpoint.CheckpointError, match="has no checksum"):
        checkpoint.read(tmp_path / "step-000000020.h5")
    warnings = []
    path, _ = checkpoint.newest_valid(tmp_path, warn=warnings.append)
    assert path.name == "step-000000010.h5" and "has no checksum" in warnings[0]


def test_forged_content_is_refused_before_use(tmp_path):
    """Checksums prove integrity, not honesty: a file written to lie is checked too."""
    import h5py
    model, opt, meta = content()
    path = checkpoint.write(tmp_path / "huge.h5", model, opt, meta)
    with h5py.File(path, "a") as f:  # 8 TB declared, nothing stored
        f["model"].create_dataset("huge", shape=(10**12,), dtype="f8", chunks=(1024,))
    with pytest.raises(checkpoint.CheckpointError, match=r"model/huge declares \(1000000000000,\) "
                                                         "but holds less data"):
        checkpoint.read(path)
    valid = {"format": checkpoint.FORMAT, "trainer": {}, "config": "", "world_size": 2,
             "model_given": False}
    checkpoint.check_meta(valid, "c.h5")
    for bad, message in [({"world_size": 0}, "world_size must be a count > 0, got '0'"),
                         ({"config": 5}, "config must be text"),
                         ({"trainer": []}, "trainer must be an object"),
                         ({"format": 1}, "has format 1 .*this dist_nn .* reads format 2")]:
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.check_meta({**valid, **bad}, "c.h5")
    with pytest.raises(checkpoint.CheckpointError, match="lacks the entry 'trainer': not a "
                                                         "training checkpoint"):
        checkpoint.check_meta({k: v for k, v in valid.items() if k != "trainer"}, "c.h5")


def test_arrays_from_outside_the_file_and_files_that_are_not_files_are_refused(tmp_path):
    """A checkpoint is read from itself only: an external link, external raw storage (any
    readable file or device) and a FIFO (open() would wait forever) are one message each."""
    import os
    import h5py
    model, opt, meta = content()
    other = checkpoint.write(tmp_path / "other.h5", model, opt, meta)
    (tmp_path / "raw.bin").write_bytes(b"\0" * 64)
    for name, plant, message in [
            ("link.h5", lambda f: f["model"].__setitem__(
                "w2", h5py.ExternalLink(str(other), "model/w")), "/model/w2 is a link"),
            ("external.h5", lambda f: f["model"].create_dataset(
                "w2", (8,), "f8", external=[(str(tmp_path / "raw.bin"), 0, 64)]),
             "/model/w2 keeps its data outside the file")]:
        path = checkpoint.write(tmp_path / name, model, opt, meta)
        with h5py.File(path, "a") as f:
            plant(f)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.read(path)
    os.mkfifo(tmp_path / "pipe.h5")
    with pytest.raises(checkpoint.CheckpointError, match="is not a regular file"):
        checkpoint.read(tmp_path / "pipe.h5")


def test_an_optimizer_state_sets_only_its_own_hyperparameters():
    model, state, _ = content()
    opt = optim.Adam(models.build("mlp", (4,), 3, hidden=(5,), batch_norm=True).parameters(),
                     lr=0.1)
    forged = {**state, "hyperparameters": {**state["hyperparameters"], "step": print}}
    with pytest.raises(ValueError, match=r"names \['step'\], which are not hyper-parameters"):
        opt.load_state_dict(forged)
    forged = {**state, "hyperparameters": {**state["hyperparameters"], "lr": "0.1"}}
    with pytest.raises(ValueError, match="lr must be a number"):
        opt.load_state_dict(forged)
    assert opt.step is not print and opt.lr == 0.1


def test_a_full_disk_is_a_write_error_and_keeps_the_older_checkpoints(tiny_tmpfs):
    """A real full file system: h5py fails with OSError or RuntimeError; both become one
    CheckpointWriteError, and no partial file is left."""
    import numpy
    disk = tiny_tmpfs("256k")
    model, opt, meta = content()
    checkpoint.save_step(disk, 1, model, opt, meta, keep=3)
    big = {"w": numpy.ones(200_000)}  # 1.6 MB
    with pytest.raises(checkpoint.CheckpointWriteError, match="cannot write the checkpoint .*"
                                                              "step-000000002.h5"):
        checkpoint.save_step(disk, 2, big, None, meta, keep=3)
    assert [p.name for p in disk.iterdir()] == ["step-000000001.h5"]
    assert checkpoint.read(disk / "step-000000001.h5")[2]["step"] == 7

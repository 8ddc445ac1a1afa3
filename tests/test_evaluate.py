"""`python -m dist_nn.evaluate`: a checkpoint is data, it does not choose the code that runs."""
import subprocess
import sys
from pathlib import Path

from dist_nn import checkpoint, config, models

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '''
from pathlib import Path
Path("imported").write_text("the module ran")  # what a hostile module would do, harmlessly
from dist_nn.models import mlp as builder
'''


def evaluate(cwd, *arguments):
    return subprocess.run([sys.executable, "-m", "dist_nn.evaluate", *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_a_checkpoint_naming_a_module_does_not_import_it_unless_the_user_names_it(tmp_path):
    (tmp_path / "hostile.py").write_text(HOSTILE)
    recorded = config.load(None, ["model.name=hostile:builder", "model.options.hidden=[8]"])
    weights = models.build("mlp", (1, 8, 8), 10, hidden=(8,)).state_dict()
    path = checkpoint.write(tmp_path / "c.h5", weights, meta={"config": config.to_toml(recorded)})
    done = evaluate(tmp_path, path, "--data", "digits")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert ("records the model 'hostile:builder', which is not built in: a checkpoint does "
            "not choose the code that runs; name it now (model.name=hostile:builder) or pass "
            "--trust-model to build it") in done.stderr
    assert not (tmp_path / "imported").exists()
    for allowed in (["model.name=hostile:builder"], ["--trust-model"]):
        done = evaluate(tmp_path, path, "--data", "digits", *allowed)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "imported").exists()
        (tmp_path / "imported").unlink()

"""The README starts with the two commands a new user needs; CI runs the second."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_blocks():
    readme = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", readme, re.S)[:2]]


def test_the_first_command_installs_and_trains_on_the_default_data():
    assert first_blocks()[0] == 'pip install -e ".[mpich,plot,fast]" && python -m dist_nn.train'


def test_ci_runs_the_readme_test_command():
    test_command = first_blocks()[1]
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines

"""Regenerate the PyTorch reference fixtures (needs torch; CPU is enough).

    python -m tests.reference.make_fixtures            # every group
    python -m tests.reference.make_fixtures layers     # one group
"""
import sys

from . import fixtures


def main(groups):
    torch = fixtures.torch_or_none()
    if torch is None:
        sys.exit("make_fixtures needs PyTorch: pip install torch==2.13.0 (CPU build)")
    for group in groups or fixtures.GROUPS:
        cases = fixtures.generate(group, torch)
        fixtures.save(group, cases)
        print(f"{fixtures.path(group)}: {len(cases)} cases (torch {torch.__version__})")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Packaging that pyproject.toml cannot say: the repository's top-level folders datasets/ and
launch/ are installed inside the dist_nn namespace (dist_nn.datasets, dist_nn.launch), never as
top-level packages: an installed `datasets` would shadow Hugging Face's."""
from setuptools import find_packages, setup

FOLDERS = {"dist_nn.datasets": "datasets", "dist_nn.launch": "launch"}

setup(packages=find_packages(include=["dist_nn", "dist_nn.*"]) + list(FOLDERS),
      package_dir=FOLDERS)

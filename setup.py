"""fractalpre: synthetic-data vision pretraining in JAX, and superres: SR data curation.

The metadata lives in pyproject.toml. The packages are listed here because the repository's configs/
folder installs as `fractalpre.configs`, so that no top-level `configs` module lands on anyone's import path
while configs/ stays where the documented commands name it."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["fractalpre", "fractalpre.*", "superres", "superres.*"]) + ["fractalpre.configs"],
      package_dir={"fractalpre.configs": "configs"})

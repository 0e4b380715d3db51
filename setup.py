"""fractalpre: synthetic-data vision pretraining in JAX, and superres: SR data curation.

The metadata lives in pyproject.toml; this file lets older tools (`python setup.py ...`) build it too."""
from setuptools import setup

setup()

"""fractalpre: synthetic-data vision pretraining in JAX, and superres: SR data curation."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("fractalpre/__init__.py").read_text()).group(1)

setup(
    name="fractalpre",
    version=version,
    description="Fast deterministic fractal datasets (1p-frac, FractalDB) and JAX pretraining",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fractalpre", "fractalpre.*", "superres", "superres.*", "configs"]),
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "numba>=0.59",
        "pillow>=10.0",
        "tqdm>=4.66",
        "tensorflow-datasets>=4.9.4",
        "array-record>=0.5",
        "jax>=0.6.1",  # jax.shard_map
        "flax>=0.10",
        "optax>=0.2.4",
        "ml-collections>=0.1.1",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "absl-py>=2.0",
        "tensorboardX>=2.6",
        "scikit-learn>=1.3",
        "scikit-image>=0.22",
        "matplotlib>=3.7",
        "scipy>=1.10",
        "pyarrow>=14",
        "threadpoolctl>=3.1",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "pytest-xdist>=3.5"],
    },
    entry_points={"console_scripts": ["fractalpre=fractalpre.cli:main", "superres=superres.cli:main"]},
)

"""fractalpre: synthetic-data (fractal) vision pretraining in JAX.

Subpackages by job, bottom to top: `util` (files, locks, usage errors), `fractals` (IFS, renderer, fractal
sources, dataset writers; no JAX), `data` (real sources, the source registry, host and device pipelines,
augmentation), `models`, `optim`, `training` (trainer, checkpoints, metrics, the classification task),
`export` (weights for timm), and `studies` (harnesses the scripts share). `import fractalpre` stays light:
each is imported on use.
"""
__version__ = "0.1.0"

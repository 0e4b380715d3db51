"""fractalpre: synthetic-data (fractal) vision pretraining in JAX.

`import fractalpre` stays light: submodules (`ifs`, `render`, `datasets`, ...) are imported on use.
"""
__version__ = "0.1.0"

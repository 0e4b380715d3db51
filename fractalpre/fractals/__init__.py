"""Fractal data: IFS samplers (`ifs`), the Numba renderer (`render`), the fractal sources (`OnePFrac`,
`FractalDB`), the single-real-image source (`SingleImage`) and the dataset writers (`writers`: ImageFolder
PNGs or TFDS). Imports no JAX, so `fractalpre generate` starts fast."""
from fractalpre.fractals.single_image import SingleImage
from fractalpre.fractals.sources import FractalDB, OnePFrac

__all__ = ["FractalDB", "OnePFrac", "SingleImage"]

"""Data for the trainer: real-image sources (`sources`) and the one registry of every source, fractal or
real (`registry.get_source`); the protocols a source and the trainer's data follow (`protocols`); the grain
host pipeline (`host_pipeline`); the device pipeline, resident or streamed (`device_pipeline`); the
augmentation recipe in JAX (`augment`) and its settings and pixel normalisation (`preprocessing`)."""
from fractalpre.data.protocols import Source, TrainData
from fractalpre.data.registry import KINDS, get_source
from fractalpre.data.sources import Digits, ImageFolder, LfwSubset, TfdsSource

__all__ = ["KINDS", "Digits", "ImageFolder", "LfwSubset", "Source", "TfdsSource", "TrainData", "get_source"]

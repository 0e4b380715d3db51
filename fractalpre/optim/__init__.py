"""Optimizers as optax transformations: the factory that builds a config's optimizer and schedule
(`factory`), IVON (`ivon`), Lion plain and sign-compressed for data parallelism (`lion`: Lion Cub's votes,
meshes and momentum sync), DiLoCo's outer optimizer and compressed pseudo-gradient means (`outer`), and
muP's update scales (`mup`)."""
from fractalpre.optim.factory import OPTIMIZERS, SCHEDULES, make, sampler, schedule
from fractalpre.optim.ivon import IvonState, ivon, ivon_sample
from fractalpre.optim.lion import COMMS, HIERARCHIES, LionState, Transport, momentum_sync_steps, step_mesh, transport

__all__ = ["COMMS", "HIERARCHIES", "OPTIMIZERS", "SCHEDULES", "IvonState", "LionState", "Transport", "ivon",
           "ivon_sample", "make", "momentum_sync_steps", "sampler", "schedule", "step_mesh", "transport"]

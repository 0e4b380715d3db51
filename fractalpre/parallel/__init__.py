"""Communication-compressed data parallelism: Lion whose data-parallel step votes on signs
(`fractalpre.parallel.lion`; the byte ledger is scripts/lion_ledger.py)."""
from fractalpre.parallel.lion import COMMS, HIERARCHIES, LionState, Transport, momentum_sync_steps, step_mesh, transport

__all__ = ["COMMS", "HIERARCHIES", "LionState", "Transport", "momentum_sync_steps", "step_mesh", "transport"]

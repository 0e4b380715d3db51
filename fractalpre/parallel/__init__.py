"""Communication-compressed data parallelism: sign-compressed Lion (the byte ledger is scripts/lion_ledger.py)."""
from fractalpre.parallel.lion import COMMS, DistributedLionState, distributed_lion, momentum_sync_steps

__all__ = ["COMMS", "DistributedLionState", "distributed_lion", "momentum_sync_steps"]

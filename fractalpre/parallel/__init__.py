"""Communication-compressed data parallelism: sign-compressed Lion and a byte ledger."""
from fractalpre.parallel.lion import COMMS, DistributedLionState, distributed_lion, momentum_sync_steps

__all__ = ["COMMS", "DistributedLionState", "distributed_lion", "momentum_sync_steps"]

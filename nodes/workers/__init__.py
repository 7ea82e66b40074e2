"""Spreading a search over Ray workers (an optional dependency): the Noise Search Workers node, the samplers'
`workers` input, and the master's and workers' sides of a distributed search."""

from .session import Distributed
from .spec import WorkerSpec, WorkersType, workers_input

__all__ = ["Distributed", "WorkerSpec", "WorkersType", "workers_input"]

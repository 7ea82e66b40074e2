"""What travels on a NOISE_SEARCH_WORKERS wire: where the workers run and what each gets. Nothing starts until a
sampler searches with it."""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io

WorkersType = io.Custom("NOISE_SEARCH_WORKERS")


@dataclass(frozen=True)
class WorkerSpec:
    """`address` "" starts a Ray of this machine's own (127.0.0.1 only); otherwise the cluster to join."""

    address: str = ""
    workers: int = 2
    gpus_per_worker: float = 1.0  # 0: CPU-only workers
    dashboard: bool = False

    @property
    def local(self) -> bool:
        return not self.address.strip()


def workers_input() -> io.Input:
    """The samplers' optional `workers` input, appended after their other inputs."""
    return WorkersType.Input("workers", optional=True,
                             tooltip="Spread the search over Ray workers (Noise Search Workers): each runs this "
                                     "workflow's models in its own process, on its own GPUs. Unconnected: the search "
                                     "runs here, as before.")

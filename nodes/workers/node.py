"""Noise Search Workers: where a search's candidates run (Ray workers on this machine or a cluster)."""

from __future__ import annotations

from comfy_api.latest import io

from ..samplers import CATEGORY
from .spec import WorkerSpec, WorkersType


class NoiseSearchWorkers(io.ComfyNode):
    """Ray workers for the samplers' `workers` input."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NoiseSearchWorkers",
            display_name="Noise Search Workers",
            category=CATEGORY,
            description="Spread a search over several GPUs or machines with Ray (pip install ray): each worker is a "
                        "process pinned to its GPUs that runs the workflow upstream of the sampler itself and "
                        "searches a share of the candidates. The result equals the search without workers.",
            inputs=[
                io.String.Input("address", default="",
                                tooltip="Empty: start Ray on this machine (listening on 127.0.0.1 only). A Ray "
                                        "address (e.g. 10.0.0.5:6379, made by `ray start --head`): join that "
                                        "cluster, whose machines need the same ComfyUI, pack and model files."),
                io.Int.Input("workers", default=2, min=1, max=256, tooltip="How many worker processes."),
                io.Float.Input("gpus_per_worker", default=1.0, min=0.0, max=16.0, step=0.05, round=0.01,
                               tooltip="GPUs each worker holds: 1 = one GPU each, 0.5 = two workers share one GPU, "
                                       "0 = CPU-only workers."),
                io.Boolean.Input("dashboard", default=False, optional=True,
                                 tooltip="Start Ray's dashboard with a local Ray (on 127.0.0.1)."),
            ],
            outputs=[WorkersType.Output(display_name="workers")],
        )

    @classmethod
    def execute(cls, address: str, workers: int, gpus_per_worker: float, dashboard: bool = False) -> io.NodeOutput:
        return io.NodeOutput(WorkerSpec(address.strip(), int(workers), float(gpus_per_worker), bool(dashboard)))

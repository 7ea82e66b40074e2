"""The Ray actor: one process that runs ComfyUI in-process and searches the candidates it is sent.

Ray ships this class to its workers by value, before ComfyUI (and so this pack) is importable there: it imports
only the standard library and Ray at the top, boots ComfyUI as main.py does (its arguments, model paths, custom
nodes, this pack among them), then hands every call to the pack's own WorkerSide (worker.py).
"""

import asyncio
import importlib
import os
import socket
import sys

import ray


def _pack(pack_dir: str):
    """This pack as the worker's ComfyUI loaded it (from its custom_nodes), found by folder."""
    want = os.path.realpath(pack_dir)
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.endswith("__init__.py") and os.path.realpath(os.path.dirname(path)) == want:
            return module
    raise RuntimeError(f"Noise Search worker on {socket.gethostname()}: ComfyUI did not load this pack from "
                       f"{pack_dir}: install the same pack in that machine's ComfyUI custom_nodes")


class SearchWorker:
    """Boots ComfyUI from `comfyui_dir` with the master's command-line arguments `argv` (no server is started)."""

    def __init__(self, comfyui_dir: str, argv: list, pack_dir: str, index: int):
        self.host = socket.gethostname()
        if not os.path.isfile(os.path.join(comfyui_dir, "main.py")):
            raise RuntimeError(f"Noise Search worker on {self.host}: no ComfyUI at {comfyui_dir} (main.py missing): "
                               f"install ComfyUI at the same path on every machine of the cluster")
        os.chdir(comfyui_dir)
        if comfyui_dir not in sys.path:
            sys.path.insert(0, comfyui_dir)
        sys.argv = [os.path.join(comfyui_dir, "main.py"), *argv]
        # ComfyUI's logger rewraps stdout/stderr's buffers; the streams Ray gave this process must stay referenced,
        # or collecting them closes those buffers under the new wrappers
        self._streams = (sys.stdout, sys.stderr)
        importlib.import_module("main")  # ComfyUI's own start-up: arguments, model paths, prestartup scripts
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        worker = importlib.import_module(_pack(pack_dir).__name__ + ".nodes.workers.worker")
        self.side = worker.WorkerSide(self.host, index)

    def prepare(self, graph: dict, node_id: str, node_class: str) -> dict:
        return self.side.prepare(graph, node_id, node_class)

    def call(self, item: int, op: str, payload: dict) -> dict:
        return self.side.call(item, op, payload)

    def finish(self) -> list:
        return self.side.finish()

    @ray.method(concurrency_group="control")
    def interrupt(self) -> None:
        """Cancel: runs beside a busy call (its own concurrency group); the call stops at its next model call."""
        self.side.interrupt()

    def pid(self) -> int:
        return os.getpid()

"""A worker's side of a distributed search, inside its own ComfyUI: rebuild the search node's inputs by executing
the workflow upstream of it (ComfyUI's own executor, so checkpoints, LoRAs and conditioning are the master's), then
integrate and score the candidate rows the master sends, through the same guider path as a one-process search."""

from __future__ import annotations

import os
import time
import uuid
from typing import Optional

import torch

import comfy.model_management

from ...search.types import Candidate
from ..comfy_model import auto_rows
from ..comfy_search import Prepared, prepare
from ..guider_bridge import SearchSampler, _Run

CAPTURE = "NoiseSearchWorkerCapture"
# fault tests: "<worker>:<call>" makes that worker's process exit at the start of its call-th call
EXIT_AT = "NOISE_SEARCH_TEST_WORKER_EXIT"


def upstream(graph: dict, node_id: str) -> dict:
    """The node and every node it depends on (API-format prompt)."""
    keep, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in keep or nid not in graph:
            continue
        keep.add(nid)
        todo += [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return {nid: graph[nid] for nid in graph if nid in keep}


class _Server:
    """What ComfyUI's executor reports to: nobody (the master shows progress)."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None) -> None:
        pass


def capture_inputs(graph: dict, node_id: str, target) -> dict:
    """Execute the workflow upstream of `node_id` and return the inputs ComfyUI hands that node."""
    import execution

    import nodes

    captured: dict = {}
    types = target.INPUT_TYPES()
    types.pop("hidden", None)
    types.get("optional", {}).pop("workers", None)

    class Capture:
        RETURN_TYPES = ()
        FUNCTION = "capture"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return types

        def capture(self, **kwargs):
            captured.update(kwargs)
            return ()

    nodes.NODE_CLASS_MAPPINGS[CAPTURE] = Capture
    sub = upstream(graph, node_id)
    sub[node_id] = {**sub[node_id], "class_type": CAPTURE,
                    "inputs": {k: v for k, v in sub[node_id]["inputs"].items() if k != "workers"}}
    executor = execution.PromptExecutor(_Server())
    executor.execute(sub, str(uuid.uuid4()), {}, [node_id])
    if not executor.success:
        errors = [data for event, data in executor.status_messages if event == "execution_error"]
        if errors:
            e = errors[-1]
            raise RuntimeError(f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_message')}")
        raise RuntimeError("the workflow upstream of the search did not run")
    return captured


def _candidates(rows: list) -> list:
    return [Candidate(**row) for row in rows]


class _Request(SearchSampler):
    """A SearchSampler that runs one request on the item's persistent run instead of a whole search."""

    def __init__(self, side: "WorkerSide", index: int, request, **kwargs):
        super().__init__(**kwargs)
        self.side, self.item_index, self.request = side, index, request
        self.response = None

    def _search(self, stages: list, noise: torch.Tensor, latent_image) -> torch.Tensor:
        run = self.side.runs.get(self.item_index)
        if run is None:
            run = self.side.runs[self.item_index] = _Run(self, stages, noise, latent_image)
        else:
            run.bind(self, stages, noise, latent_image)
        self.response = self.request(run, stages, noise)
        return torch.zeros_like(noise)


class WorkerSide:
    """One worker's state between the master's calls: the prepared inputs and one persistent run per item."""

    def __init__(self, host: str, index: int):
        self.host, self.index = host, index
        self.prepared: Optional[Prepared] = None
        self.runs: dict = {}
        self.calls = 0

    def prepare(self, graph: dict, node_id: str, node_class: str) -> dict:
        import nodes

        target = nodes.NODE_CLASS_MAPPINGS[graph[node_id]["class_type"]]
        inputs = capture_inputs(graph, node_id, target)
        self.prepared = prepare(**target.search_inputs(**inputs))
        self.runs = {}
        rows, portable = self._run(0, lambda run, stages, noise: (
            self.prepared.settings.batch_size or min(auto_rows(s.model_wrap, noise.shape) for s in stages),
            run.portable))
        return {"host": self.host, "pid": os.getpid(), "rows": int(rows), "portable": portable}

    def _run(self, item: int, request):
        """`request(run, stages, noise)` inside the guider(s), in inference mode as ComfyUI executes nodes."""
        p = self.prepared
        scorer = p.scorer(item, keep=1)
        search = p.search_sampler(item, scorer, cls=_Request, side=self, index=item, request=request)
        with torch.inference_mode():
            p.sample(item, search)
        return search.response

    def call(self, item: int, op: str, payload: dict) -> dict:
        self.calls += 1
        if os.environ.get(EXIT_AT) == f"{self.index}:{self.calls}":
            os._exit(1)
        comfy.model_management.interrupt_current_processing(False)
        start = time.perf_counter()
        batch = _candidates(payload["batch"])
        if op == "integrate":
            def request(run, stages, noise):
                x_end, x0 = run.integrate(payload["x"], payload["sigmas"], batch)
                return {"x_end": x_end.to("cpu"), "x0": x0.to("cpu")}
        else:
            def request(run, stages, noise):
                out = run.score(payload["x"], payload["sigma"], batch)
                scores, members = out if isinstance(out, tuple) else (out, {})
                scorer = run.owner.scorer
                final = batch[0].final
                return {"scores": torch.as_tensor(scores).detach().to("cpu"),
                        "members": {k: torch.as_tensor(v).detach().to("cpu") for k, v in members.items()},
                        "candidates": [{"decode": c.decode, "extra": c.extra} for c in batch],
                        "latents": [scorer.latents[c.id] for c in batch] if final else None,
                        "thumbs": [scorer.thumbs[c.id] for c in batch] if final else None}
        response = self._run(item, request)
        response["seconds"] = time.perf_counter() - start
        return response

    def finish(self) -> list:
        """Every item's notes (NFE drift, spilled records, runs repeated after a lost worker)."""
        notes = []
        for item, run in sorted(self.runs.items()):
            notes += [(item, n) for n in run.notes()]
        self.runs = {}
        return notes

    def interrupt(self) -> None:
        comfy.model_management.interrupt_current_processing(True)

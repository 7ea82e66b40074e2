"""The master's side of a distributed search: the search itself runs here, as without workers; its integrate and
score calls go to the workers, each candidate lineage (its root) to one worker, chunks spread over all of them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management

from ...search import run_search
from ...search.types import Candidate, SearchProblem, SearchResult
from ..comfy_model import renoise_for
from .pool import Pool
from .spec import WorkerSpec

log = logging.getLogger(__name__)


@dataclass
class Distributed:
    """A search node's run over `spec`: the running workflow and the node's id in it, which every worker executes
    up to that node to rebuild its inputs."""

    spec: WorkerSpec
    graph: dict
    node_id: str
    node_class: str

    def session(self, prepared) -> "Session":
        """The workers started (or joined) and prepared with the node's inputs."""
        return Session(self, prepared)


class Session:
    """The workers of one search node's run, prepared with its inputs."""

    def __init__(self, dist: Distributed, prepared):
        self.p = prepared
        self.lost: list = []  # workers lost mid-search, in order
        start = time.perf_counter()
        self.pool = Pool(dist.spec, prepared.node)
        try:
            infos = self.gather([(w, "prepare", (dist.graph, dist.node_id, dist.node_class))
                                 for w in range(dist.spec.workers)], retry=False)
        except BaseException:
            self.pool.close()
            raise
        self.hosts = [f"{i['host']}:{i['pid']}" for i in infos]
        self.pool.pids = [i["pid"] for i in infos]
        self.rows = [i["rows"] for i in infos]
        self.portable = all(i["portable"] for i in infos)
        self.seconds = [0.0] * len(infos)
        self.ready_s = time.perf_counter() - start
        log.info("Noise Search: %d Ray workers ready (%s), %s rows per call", len(infos), ", ".join(self.hosts),
                 self.rows)

    def gather(self, calls: list, retry: bool = True, reassign: Optional[Callable] = None) -> list:
        """Run `calls` [(worker, method, args)] at once and return their results in order. Cancel interrupts every
        worker; a lost worker's calls go to another (`reassign(call, new worker)` rewrites them) when `retry`."""
        ray = self.pool.ray
        pending = {self.pool.call(w, m, *a): i for i, (w, m, a) in enumerate(calls)}
        results: list = [None] * len(calls)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.1)
            if comfy.model_management.processing_interrupted():
                self.pool.interrupt()
                comfy.model_management.throw_exception_if_processing_interrupted()
            for ref in done:
                i = pending.pop(ref)
                w = calls[i][0]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if not retry:
                        raise RuntimeError(self._where(w, e)) from e
                    other = self.pool.lost(w)
                    if w not in self.lost:
                        self.lost.append(w)
                    if other is None:
                        raise RuntimeError(f"{self.p.node}: every worker was lost; the last: {e}") from e
                    calls[i] = reassign(calls[i], other) if reassign else (other,) + tuple(calls[i][1:])
                    pending[self.pool.call(*calls[i][:2], *calls[i][2])] = i
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise RuntimeError(self._where(w, e.cause if e.cause is not None else e)) from e
                if isinstance(results[i], dict) and "seconds" in results[i] and w < len(getattr(self, "seconds", [])):
                    self.seconds[w] += results[i]["seconds"]
        return results

    def _where(self, w: int, error) -> str:
        host = self.hosts[w] if hasattr(self, "hosts") else f"worker {w}"
        return f"{self.p.node}: worker {w} ({host}): {error}"

    def search_item(self, b: int, scorer, progress) -> tuple:
        """Latent batch item `b` searched over the workers: (result, the output latent, notes)."""
        p = self.p
        remote = RemoteRun(self, b, scorer)
        model_sampling = p.guider.model_patcher.get_model_object("model_sampling")
        problem = SearchProblem(integrate=remote.integrate, score=remote.score, sigmas=p.sigmas, noise=p.noise(b),
                                renoise=renoise_for(model_sampling), cost=p.cost, max_batch=sum(self.rows),
                                progress=progress, device=None,
                                aggregate=getattr(p.verifier.verifier, "aggregate", None))
        result: SearchResult = run_search(p.settings.algorithm, problem, **p.settings.config())
        out = scorer.latents[result.best_id].unsqueeze(0)  # the final latent as the guider outputs it
        return result, out, []

    def close(self) -> list:
        """Every worker's notes and share of the time; then no worker process is left (or a note says which is)."""
        notes = []
        try:
            if self.pool.alive:
                for item_notes in self.gather([(w, "finish", ()) for w in self.pool.alive], retry=False):
                    notes += [f"item {i}: {n}" if self.p.items > 1 else n for i, n in item_notes]
            total = sum(self.seconds) or 1.0
            shares = ", ".join(f"worker {w} ({h}) {s:.1f} s ({100 * s / total:.0f} %)"
                               for w, (h, s) in enumerate(zip(self.hosts, self.seconds)))
            lost = [f"worker {w} ({self.hosts[w]}) was lost mid-search: its candidates ran again on the others"
                    for w in self.lost]
            notes += lost + [f"spread over {len(self.hosts)} Ray workers: {shares}",
                             f"workers ready in {self.ready_s:.1f} s (Ray started or joined, ComfyUI booted in each, "
                             f"the workflow run up to the search)"]
        finally:
            notes += self.pool.close()
        return notes


class RemoteRun:
    """integrate and score for SearchProblem, run by the workers: a candidate stays on one worker (its paused run
    lives there), and so does its whole lineage where children need what a parent left (x0 references, masked
    latents); new ones go to the least loaded."""

    def __init__(self, session: Session, item: int, scorer):
        self.session, self.item, self.scorer = session, item, scorer
        self.home: dict = {}  # candidate id (or root id) -> worker

    def _key(self, c: Candidate) -> int:
        return c.id if self.session.portable else c.root

    def _split(self, batch: Sequence[Candidate]) -> dict:
        """worker -> row indices of `batch`; what ran before stays where it ran, new ones fill the least loaded."""
        alive = self.session.pool.alive
        load = {w: 0 for w in alive}
        for c in batch:
            if self.home.get(self._key(c)) in load:
                load[self.home[self._key(c)]] += 1
        groups: dict = {}
        for i, c in enumerate(batch):
            w = self.home.get(self._key(c))
            if w not in load:
                w = min(alive, key=lambda v: (load[v] / self.session.rows[v], v))
                self.home[self._key(c)] = w
                load[w] += 1
            groups.setdefault(w, []).append(i)
        return groups

    def _calls(self, op: str, batch: Sequence[Candidate], payload: Callable) -> tuple:
        groups = self._split(batch)
        calls, rows = [], []
        for w, idx in groups.items():
            size = self.session.rows[w]
            for lo in range(0, len(idx), size):
                part = idx[lo: lo + size]
                calls.append((w, "call", (self.item, op, payload(part))))
                rows.append(part)

        def reassign(call, other):
            w = call[0]
            for key, home in list(self.home.items()):
                if home == w:
                    self.home[key] = other
            return (other,) + tuple(call[1:])

        return self.session.gather(calls, reassign=reassign), rows, calls

    def integrate(self, x: torch.Tensor, sigmas: torch.Tensor, batch: Sequence[Candidate]):
        def payload(part):
            return {"x": x[part].to("cpu"), "sigmas": sigmas, "batch": [batch[i].to_dict() for i in part]}

        results, rows, calls = self._calls("integrate", batch, payload)
        x_end, x0 = torch.empty_like(x, device="cpu"), torch.empty_like(x, device="cpu")
        for r, part, call in zip(results, rows, calls):
            x_end[part], x0[part] = r["x_end"].to(x_end.dtype), r["x0"].to(x0.dtype)
            for i in part:
                batch[i].extra["worker"] = call[0]
        return x_end, x0

    def score(self, x: torch.Tensor, sigma: float, batch: Sequence[Candidate]):
        def payload(part):
            return {"x": x[part].to("cpu"), "sigma": sigma, "batch": [batch[i].to_dict() for i in part]}

        results, rows, _ = self._calls("score", batch, payload)
        k = len(batch)
        scores = torch.empty(k, dtype=torch.float64)
        members: dict = {}
        for r, part in zip(results, rows):
            scores[part] = r["scores"].to(torch.float64).reshape(-1)
            for name, v in r["members"].items():
                members.setdefault(name, torch.empty(k, dtype=torch.float64))[part] = v.to(torch.float64).reshape(-1)
            for i, facts in zip(part, r["candidates"]):
                batch[i].decode = facts["decode"]
                batch[i].extra.update(facts["extra"])
            if r["latents"] is not None:
                self.scorer.keep_remote([batch[i] for i in part], r["latents"], r["thumbs"])
        return (scores, members) if members else scores

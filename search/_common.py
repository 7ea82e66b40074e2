"""Shared machinery: run candidate rows in chunks, count NFEs, log candidates, keep the top-k final states."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from .types import Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items."""
    for lo in range(0, len(items), size):
        yield items[lo: lo + size]


def check_problem(problem: SearchProblem, top_k: int) -> None:
    if isinstance(problem.max_batch, bool) or int(problem.max_batch) != problem.max_batch or problem.max_batch < 1:
        raise ValueError(f"SearchProblem.max_batch must be an integer >= 1, got {problem.max_batch!r}")
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")


def stack_rows(problem: SearchProblem, rows: Iterable[Tensor]) -> Tensor:
    """Rows ``[*shape]`` -> batch ``[K, *shape]`` on the problem's device."""
    x = torch.stack(list(rows))
    return x.to(problem.device) if problem.device is not None else x


def _split_score(out, k: int, batch: Sequence[Candidate]) -> tuple:
    scores, members = out if isinstance(out, tuple) else (out, {})
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64).reshape(-1)
    if scores.numel() != k:
        raise ValueError(f"score() must return one score per row: expected {k}, got {scores.numel()}")
    values = [float(s) for s in scores]
    for c, s in zip(batch, values):
        if math.isnan(s):
            raise ValueError(f"score() returned NaN for candidate {c.id}: check the verifier")
    member_values = {}
    for name, t in dict(members).items():
        t = torch.as_tensor(t).detach().to("cpu", torch.float64).reshape(-1)
        if t.numel() != k:
            raise ValueError(f"score member {name!r} must have one value per row: expected {k}, got {t.numel()}")
        member_values[name] = [float(v) for v in t]
    return values, member_values


class Tracker:
    """Owns the bookkeeping of one search; algorithms only decide which rows to run over which sigmas."""

    def __init__(self, problem: SearchProblem, nfe_planned: int, top_k: int):
        check_problem(problem, top_k)
        self.problem = problem
        self.nfe_planned = int(nfe_planned)
        self.top_k = int(top_k)
        self.nfe = 0
        self.candidates: list = []
        self.curve: list = []
        self.baseline: Optional[float] = None
        self._top: list = []  # (candidate, final state on CPU, initial noise), best first

    @property
    def best(self) -> Optional[Candidate]:
        return self._top[0][0] if self._top else None

    def run_chunk(self, x: Tensor, sigmas: Tensor, batch: Sequence[Candidate], *, final: bool, score: bool = True,
                  init: Optional[Callable[[int], Tensor]] = None) -> Tensor:
        """Integrate ``x`` over ``sigmas``; score the x0 prediction, or ``x_end`` when ``final`` (schedule's end).

        Final rows compete for the top-k; ``init(row)`` gives a row's initial noise, asked only if it enters.
        Returns ``x_end``.
        """
        problem = self.problem
        if x.shape[0] != len(batch):
            raise ValueError(f"internal: {x.shape[0]} rows for {len(batch)} candidates")
        x_end, x0 = problem.integrate(x, sigmas, batch)
        if x_end.shape != x.shape or x0.shape != x.shape:
            raise ValueError(f"integrate() must return (x_end, x0) shaped like x {tuple(x.shape)}, "
                             f"got {tuple(x_end.shape)} and {tuple(x0.shape)}")
        self.nfe += problem.nfe(sigmas) * len(batch)
        sigma = float(sigmas[-1])
        for c in batch:
            c.nfe = self.nfe
            c.sigma = sigma
        if score:
            values, members = _split_score(problem.score(x_end if final else x0, sigma, batch), len(batch), batch)
            for j, c in enumerate(batch):
                c.score = values[j]
                c.members.update({name: v[j] for name, v in members.items()})
                if final:
                    self._offer(c, x_end[j], init, j)
        self.candidates.extend(batch)
        best = self.best
        if best is not None:
            self.curve.append((self.nfe, best.score))
        if problem.progress is not None:
            problem.progress(self.nfe, self.nfe_planned, None if best is None else best.score, best)
        return x_end

    def _offer(self, c: Candidate, state: Tensor, init: Optional[Callable[[int], Tensor]], row: int) -> None:
        if c.id == 0:
            self.baseline = c.score
        key = (-c.score, c.id)
        if len(self._top) == self.top_k and key >= (-self._top[-1][0].score, self._top[-1][0].id):
            return
        noise = init(row).detach().to("cpu").clone() if init is not None else None
        self._top.append((c, state.detach().to("cpu").clone(), noise))
        self._top.sort(key=lambda e: (-e[0].score, e[0].id))
        del self._top[self.top_k:]

    def result(self, algorithm: str, config: dict, notes: Sequence[str] = (),
               baseline: bool = True) -> SearchResult:
        if not self._top:
            raise RuntimeError("internal: the search ended without a final (sigma 0) candidate")
        best, state, noise = self._top[0]
        return SearchResult(
            algorithm=algorithm, config=dict(config), best=state, best_score=best.score, best_id=best.id,
            best_noise=noise, topk=torch.stack([e[1] for e in self._top]),
            topk_ids=[e[0].id for e in self._top], topk_scores=[e[0].score for e in self._top],
            candidates=list(self.candidates), nfe=self.nfe, nfe_planned=self.nfe_planned, curve=list(self.curve),
            baseline_score=self.baseline if baseline else None, notes=list(notes),
        )

"""Shared machinery: run candidate rows in chunks, count NFEs, log candidates, keep the top-k final states."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from .budget import check_top_k
from .types import Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items."""
    for lo in range(0, len(items), size):
        yield items[lo: lo + size]


def check_problem(problem: SearchProblem, top_k: int) -> None:
    if isinstance(problem.max_batch, bool) or int(problem.max_batch) != problem.max_batch or problem.max_batch < 1:
        raise ValueError(f"SearchProblem.max_batch must be an integer >= 1, got {problem.max_batch!r}")
    check_top_k(top_k)


def stack_rows(problem: SearchProblem, rows: Iterable[Tensor]) -> Tensor:
    """Rows ``[*shape]`` -> batch ``[K, *shape]`` on the problem's device."""
    x = torch.stack(list(rows))
    return x.to(problem.device) if problem.device is not None else x


def _rows(t, k: int, batch: Sequence[Candidate], what: str, check_nan: bool) -> list:
    """One float per row of a score tensor; `what` names it in errors."""
    t = torch.as_tensor(t).detach().to("cpu", torch.float64).reshape(-1)
    if t.numel() != k:
        raise ValueError(f"{what} must return one score per row: expected {k}, got {t.numel()}")
    values = [float(v) for v in t]
    for c, v in zip(batch, values):
        if check_nan and math.isnan(v):
            raise ValueError(f"{what} returned NaN for candidate {c.id}: check the verifier")
    return values


def _split_score(out, k: int, batch: Sequence[Candidate], aggregate: bool) -> tuple:
    """score()'s output -> (scores, {member: scores}) as floats; the scores are None when an aggregate decides them."""
    scores, members = out if isinstance(out, tuple) else (out, {})
    if aggregate and not members:
        raise ValueError("SearchProblem.aggregate is set, so score() must return (scores, {member: scores}) with the "
                         "raw member scores it aggregates")
    values = [None] * k if aggregate else _rows(scores, k, batch, "score()", check_nan=True)
    member_values = {name: _rows(t, k, batch, f"score member {name!r}", check_nan=aggregate)
                     for name, t in dict(members).items()}
    return values, member_values


def aggregate_scores(problem: SearchProblem, cands: Sequence[Candidate]) -> None:
    """Judge ``cands`` as one comparable set: each score becomes ``problem.aggregate`` over all their raw members.

    The one place a set-relative score is decided; without an aggregate, scores are absolute and left as scored.
    """
    if problem.aggregate is None or not cands:
        return
    names = list(cands[0].members)
    for c in cands:
        if list(c.members) != names:
            raise ValueError(f"score members differ between candidates {cands[0].id} ({names}) and {c.id} "
                             f"({list(c.members)}): every call must return the same members")
    out = problem.aggregate({n: torch.tensor([c.members[n] for c in cands], dtype=torch.float64) for n in names})
    values = torch.as_tensor(out).detach().to("cpu", torch.float64).reshape(-1)
    if values.numel() != len(cands):
        raise ValueError(f"aggregate() must return one score per candidate: expected {len(cands)}, "
                         f"got {values.numel()}")
    for c, v in zip(cands, values.tolist()):
        if math.isnan(v):
            raise ValueError(f"aggregate() returned NaN for candidate {c.id}: check the verifier")
        c.score = v


def _noise(init: Optional[Callable[[int], Tensor]], row: int) -> Optional[Tensor]:
    return init(row).detach().to("cpu").clone() if init is not None else None


class Tracker:
    """Owns the bookkeeping of one search; algorithms only decide which rows to run over which sigmas.

    All final candidates form one comparable set. With ``problem.aggregate`` every final score is re-aggregated
    over all finals scored so far after each chunk, so best, top-k and the winner never depend on the chunking;
    every final state (and initial noise) is kept on the CPU, since a later final can reorder earlier ones.
    Without it only the top-k are kept.
    """

    def __init__(self, problem: SearchProblem, nfe_planned: int, top_k: int):
        check_problem(problem, top_k)
        self.problem = problem
        self.nfe_planned = int(nfe_planned)
        self.top_k = int(top_k)
        self.nfe = 0
        self.candidates: list = []
        self.curve: list = []  # see SearchResult.curve
        self._base: Optional[Candidate] = None  # candidate 0 once final: the seed's own sample
        self._finals: list = []  # with an aggregate: every (candidate, final state, initial noise), in scored order
        self._top: list = []  # (candidate, final state on CPU, initial noise), best first

    @property
    def best(self) -> Optional[Candidate]:
        return self._top[0][0] if self._top else None

    def run_chunk(self, x: Tensor, sigmas: Tensor, batch: Sequence[Candidate], *, final: bool, score: bool = True,
                  init: Optional[Callable[[int], Tensor]] = None) -> Tensor:
        """Integrate ``x`` over ``sigmas``; score the x0 prediction, or ``x_end`` when ``final`` (schedule's end).

        Final rows compete for the top-k; ``init(row)`` gives a row's initial noise, asked only if it is kept.
        With an aggregate, non-final rows stay unscored (None) until the algorithm aggregates their set.
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
            c.final = final
        if score:
            out = problem.score(x_end if final else x0, sigma, batch)
            values, members = _split_score(out, len(batch), batch, problem.aggregate is not None)
            for j, c in enumerate(batch):
                c.score = values[j]
                c.members.update({name: v[j] for name, v in members.items()})
            if final:
                self._add_finals(batch, x_end, init)
        self.candidates.extend(batch)
        best = self.best
        if best is not None:
            self.curve.append((self.nfe, best.score))
        if problem.progress is not None:
            problem.progress(self.nfe, self.nfe_planned, None if best is None else best.score, best)
        return x_end

    def _add_finals(self, batch: Sequence[Candidate], x_end: Tensor, init: Optional[Callable[[int], Tensor]]) -> None:
        self._base = self._base or next((c for c in batch if c.id == 0), None)
        if self.problem.aggregate is None:
            for j, c in enumerate(batch):
                self._offer(c, x_end[j], init, j)
            return
        self._finals.extend((c, x_end[j].detach().to("cpu").clone(), _noise(init, j)) for j, c in enumerate(batch))
        aggregate_scores(self.problem, [e[0] for e in self._finals])
        self._top = sorted(self._finals, key=lambda e: (-e[0].score, e[0].id))[: self.top_k]

    def _offer(self, c: Candidate, state: Tensor, init: Optional[Callable[[int], Tensor]], row: int) -> None:
        key = (-c.score, c.id)
        if len(self._top) == self.top_k and key >= (-self._top[-1][0].score, self._top[-1][0].id):
            return
        self._top.append((c, state.detach().to("cpu").clone(), _noise(init, row)))
        self._top.sort(key=lambda e: (-e[0].score, e[0].id))
        del self._top[self.top_k:]

    def result(self, algorithm: str, config: dict, notes: Sequence[str] = (),
               baseline: bool = True) -> SearchResult:
        if not self._top:
            raise RuntimeError("internal: the search ended without a final (sigma 0) candidate")
        best, state, noise = self._top[0]
        notes = list(notes)
        if len(self._top) < self.top_k:
            notes.append(f"top_k={self.top_k} is larger than the {len(self._top)} final candidate(s) this search "
                         f"produced: top_k holds {len(self._top)}")
        return SearchResult(
            algorithm=algorithm, config=dict(config), best=state, best_score=best.score, best_id=best.id,
            best_noise=noise, topk=torch.stack([e[1] for e in self._top]),
            topk_ids=[e[0].id for e in self._top], topk_scores=[e[0].score for e in self._top],
            candidates=list(self.candidates), nfe=self.nfe, nfe_planned=self.nfe_planned, curve=list(self.curve),
            baseline_score=self._base.score if baseline and self._base is not None else None, notes=notes,
        )

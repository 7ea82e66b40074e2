"""Shared machinery: run candidate rows in chunks, count NFEs, log candidates, keep the top-k final states."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from .budget import SettingError, check_top_k
from .types import Aggregate, Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor


def integrate_by_kind(problem: SearchProblem, x: Tensor, sigmas: Tensor, batch: Sequence[Candidate]) -> tuple:
    """problem.integrate over the rows of each kind apart (fresh noise or not, plain or not), as SearchProblem
    promises: a round that mixes kinds (a trust region restarting beside one stepping) is split, in row order."""
    groups: dict = {}
    for j, c in enumerate(batch):
        groups.setdefault((c.from_noise, c.plain), []).append(j)
    if len(groups) == 1:
        return problem.integrate(x, sigmas, batch)
    x_end, x0 = torch.empty_like(x), torch.empty_like(x)
    for rows in groups.values():
        x_end[rows], x0[rows] = problem.integrate(x[rows], sigmas, [batch[j] for j in rows])
    return x_end, x0


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


def record_scores(batch: Sequence[Candidate], out, aggregate: bool) -> None:
    """Store score()'s output for ``batch`` on its candidates: scores (None while an aggregate decides them) and
    every member's raw score."""
    values, members = _split_score(out, len(batch), batch, aggregate)
    for j, c in enumerate(batch):
        c.score = values[j]
        c.members.update({name: v[j] for name, v in members.items()})


def aggregate_scores(aggregate: Optional[Aggregate], cands: Sequence[Candidate]) -> None:
    """Judge ``cands`` as one comparable set: each score becomes ``aggregate`` over all their raw members.

    The one place a set-relative score is decided; without an aggregate, scores are absolute and left as scored.
    """
    if aggregate is None or not cands:
        return
    names = list(cands[0].members)
    for c in cands:
        if list(c.members) != names:
            raise ValueError(f"score members differ between candidates {cands[0].id} ({names}) and {c.id} "
                             f"({list(c.members)}): every call must return the same members")
    out = aggregate({n: torch.tensor([c.members[n] for c in cands], dtype=torch.float64) for n in names})
    values = torch.as_tensor(out).detach().to("cpu", torch.float64).reshape(-1)
    if values.numel() != len(cands):
        raise ValueError(f"aggregate() must return one score per candidate: expected {len(cands)}, "
                         f"got {values.numel()}")
    for c, v in zip(cands, values.tolist()):
        if math.isnan(v):
            raise ValueError(f"aggregate() returned NaN for candidate {c.id}: check the verifier")
        c.score = v


def check_stop_score(aggregate: Optional[Callable], stop_score: Optional[float]) -> None:
    """An early-exit threshold needs absolute scores: with an aggregate (an ensemble) they are ranks among all."""
    if stop_score is not None and aggregate is not None:
        raise SettingError("stop_score", "{stop_score} needs absolute scores, but this verifier's (an ensemble's) are "
                                         "ranks among all candidates: turn early exit off or use a single verifier")


def _noise(init: Optional[Callable[[int], Tensor]], row: int) -> Optional[Tensor]:
    return init(row).detach().to("cpu").clone() if init is not None else None


class Tracker:
    """Owns the bookkeeping of one search; algorithms only decide which rows to run over which sigmas.

    All final candidates form one comparable set. With ``problem.aggregate`` every final score is re-aggregated
    over all finals scored so far after each chunk, so best, top-k and the winner never depend on the chunking;
    every final state (and initial noise) is kept on the CPU, since a later final can reorder earlier ones.
    Without it only the top-k are kept.
    """

    def __init__(self, problem: SearchProblem, nfe_planned: int, top_k: int, stop_score: Optional[float] = None):
        check_problem(problem, top_k)
        check_stop_score(problem.aggregate, stop_score)
        self.problem = problem
        self.stop_score = stop_score
        self.stopped: Optional[Candidate] = None  # the candidate whose score ended the search early
        self.dropped: list = []  # candidates computed alongside the one that stopped it, left out of the result
        self.nfe_at_stop = 0  # NFEs spent when the search would have stopped running one candidate at a time
        self.nfe_dropped = 0  # NFEs of the dropped candidates
        self._unit = 0  # NFEs per candidate of the last chunk
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
                  init: Optional[Callable[[int], Tensor]] = None, unit: Optional[int] = None,
                  log: bool = True) -> Tensor:
        """Integrate ``x`` over ``sigmas``; score the x0 prediction, or ``x_end`` when ``final`` (schedule's end).

        Final rows compete for the top-k; ``init(row)`` gives a row's initial noise, asked only if it is kept.
        With an aggregate, non-final rows stay unscored (None) until the algorithm aggregates their set.
        ``unit`` overrides the NFEs per row (default ``problem.nfe(sigmas)``); ``log=False`` for candidates already
        in the log (one continuing over several slices). Returns ``x_end``.
        """
        problem = self.problem
        if x.shape[0] != len(batch):
            raise ValueError(f"internal: {x.shape[0]} rows for {len(batch)} candidates")
        x_end, x0 = integrate_by_kind(problem, x, sigmas, batch)
        if x_end.shape != x.shape or x0.shape != x.shape:
            raise ValueError(f"integrate() must return (x_end, x0) shaped like x {tuple(x.shape)}, "
                             f"got {tuple(x_end.shape)} and {tuple(x0.shape)}")
        self._unit = problem.nfe(sigmas) if unit is None else int(unit)
        self.nfe += self._unit * len(batch)
        sigma = float(sigmas[-1])
        for c in batch:
            c.nfe = self.nfe
            c.sigma = sigma
            c.final = final
        if score:
            record_scores(batch, problem.score(x_end if final else x0, sigma, batch), problem.aggregate is not None)
            if final:
                self._add_finals(batch, x_end, init)
        if log:
            self.candidates.extend(batch)
        best = self.best
        if best is not None:
            self.curve.append((self.nfe, best.score))
        if problem.progress is not None:
            problem.progress(self.nfe, self.nfe_planned, None if best is None else best.score, best)
        return x_end

    def _add_finals(self, batch: Sequence[Candidate], x_end: Tensor, init: Optional[Callable[[int], Tensor]]) -> None:
        self._base = self._base or next((c for c in batch if c.id == 0), None)
        if self.problem.aggregate is None and self.stop_score is None:
            for j, c in enumerate(batch):
                self._offer(c, x_end[j], init, j)
            return
        self._finals.extend((c, x_end[j].detach().to("cpu").clone(), _noise(init, j)) for j, c in enumerate(batch))
        aggregate_scores(self.problem.aggregate, [e[0] for e in self._finals])
        self._top = sorted(self._finals, key=lambda e: (-e[0].score, e[0].id))[: self.top_k]

    def reached(self, score: Optional[float]) -> bool:
        """Whether `score` meets the early-exit threshold (never without one)."""
        return self.stop_score is not None and score is not None and score >= self.stop_score

    def stop_within(self, batch: Sequence[Candidate]) -> bool:
        """Early exit inside a chunk scored in order: the first candidate reaching the threshold ends the search
        and the ones after it in `batch` are dropped (their NFEs stay spent), so the result does not depend on
        how many candidates a chunk held."""
        first = next((i for i, c in enumerate(batch) if self.reached(c.score)), None)
        if first is None:
            return False
        self.stopped, self.dropped = batch[first], list(batch[first + 1:])
        self.nfe_dropped = self._unit * len(self.dropped)
        self.nfe_at_stop = self.nfe - self.nfe_dropped
        gone = {c.id for c in self.dropped}
        self.candidates = [c for c in self.candidates if c.id not in gone]
        self._finals = [e for e in self._finals if e[0].id not in gone]
        self._top = sorted(self._finals, key=lambda e: (-e[0].score, e[0].id))[: self.top_k]
        return True

    def stop_after_round(self, best: Optional[Candidate] = None) -> bool:
        """Early exit at a round boundary: `best` (default: the best final so far) meets the threshold."""
        best = self.best if best is None else best
        if best is not None and self.reached(best.score):
            self.stopped, self.nfe_at_stop = best, self.nfe
        return self.stopped is not None

    def _offer(self, c: Candidate, state: Tensor, init: Optional[Callable[[int], Tensor]], row: int) -> None:
        key = (-c.score, c.id)
        if len(self._top) == self.top_k and key >= (-self._top[-1][0].score, self._top[-1][0].id):
            return
        self._top.append((c, state.detach().to("cpu").clone(), _noise(init, row)))
        self._top.sort(key=lambda e: (-e[0].score, e[0].id))
        del self._top[self.top_k:]

    def _stop_notes(self) -> list[str]:
        unspent = self.nfe_planned - (self.nfe - self.nfe_dropped)
        notes = [f"stopped early: candidate {self.stopped.id} scored {self.stopped.score:.6g} >= stop_score="
                 f"{self.stop_score:g} after {self.nfe_at_stop} of the {self.nfe_planned} planned NFEs; {unspent} "
                 f"were left unspent"]
        if self.dropped:
            notes.append(f"{len(self.dropped)} candidate(s) computed in the same batch after it were left out "
                         f"({self.nfe_dropped} NFEs), so the result does not depend on batch_size")
        return notes

    def result(self, algorithm: str, config: dict, notes: Sequence[str] = (),
               baseline: bool = True) -> SearchResult:
        if not self._top:
            raise RuntimeError("internal: the search ended without a final (sigma 0) candidate")
        best, state, noise = self._top[0]
        notes = list(notes)
        if self.stopped is not None:
            notes += self._stop_notes()
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

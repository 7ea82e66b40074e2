"""Seed racing: successive halving over stock seeds (Jamieson & Talwalkar 2016; Li et al. 2017, Hyperband), with
x0 predictions as the early scores. No re-noising: every finisher is the stock sample of its seed."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from ._common import Tracker, aggregate_scores, chunks, stack_rows
from .budget import nfe_fn, parse_rungs, plan_racing
from .stats import spearman
from .types import Candidate, SearchProblem, SearchResult


def racing_search(problem: SearchProblem, *, n: int = 16, eta: int = 2, rungs: Sequence[float] | str = (0.75, 0.5),
                  budget_nfe: Optional[int] = None, top_k: int = 1,
                  stop_score: Optional[float] = None) -> SearchResult:
    """Run noise(0..n-1) to the first rung, score their x0 predictions, keep the best ceil(k / eta), run those to
    the next rung, and so on; the last survivors finish and are ranked on their final samples.

    ``rungs`` are trajectory times (1 = pure noise, 0 = clean), mapped like Search over Paths' ``sigma_start``.
    Candidates are plain: each continues its own uninterrupted run (the runner keeps its sampler state), so
    candidate i is the stock sampler's result for seed + i. A rung's candidates are one comparable set (with an
    aggregate, ranked over the whole rung). ``stop_score`` ends the search at the first finisher, in id order,
    that reaches it. A budget picks the largest n that fits.
    """
    plan = plan_racing(nfe_fn(problem.cost), problem.sigmas, n=n, eta=eta, rungs=rungs, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    sigmas = problem.sigmas
    alive = [(Candidate(id=i, parent=None, round=0, kind="initial", plain=True, extra={"rungs": []}),
              problem.noise(i)) for i in range(plan.n)]
    last = len(plan.segments) - 1
    for r, ((lo, hi), unit) in enumerate(zip(plan.segments, plan.costs)):
        final = r == last
        if final:
            alive.sort(key=lambda e: e[0].id)  # early exit in id order, as Random's
            at_rung = {c.id: (c.score, c.sigma, c.nfe, dict(c.members)) for c, _ in alive}
        scored = []
        for chunk in chunks(alive, problem.max_batch):
            batch = [c for c, _ in chunk]
            x_end = run.run_chunk(stack_rows(problem, [x for _, x in chunk]), sigmas[lo: hi + 1], batch,
                                  final=final, unit=unit, log=r == 0, init=_initial(problem, batch))
            scored.extend(zip(batch, x_end.detach().to("cpu")))
            if final and run.stop_within(batch):
                _unfinish(run, at_rung)
                break
        if final:
            break
        aggregate_scores(problem.aggregate, [c for c, _ in scored])
        for c, _ in scored:
            c.extra["rungs"].append({"step": hi, "sigma": c.sigma, "score": c.score, "members": dict(c.members),
                                     "decode": c.decode})
        scored.sort(key=lambda e: (-e[0].score, e[0].id))
        for c, _ in scored[plan.sizes[r + 1]:]:
            c.extra["dropped_at"] = r + 1
        alive = scored[: plan.sizes[r + 1]]

    rho = rung_agreement(run.candidates, len(plan.rungs))
    notes = _notes(plan, len(sigmas) - 1, rho, sum(c.final for c in run.candidates))
    if plan.n < n:
        notes.append(f"budget_nfe={budget_nfe} pays for {plan.n} of the {n} seeds ({plan.total} NFEs): raise "
                     f"budget_nfe to run them all")
    config = {"n": n, "eta": eta, "rungs": parse_rungs(rungs), "budget_nfe": budget_nfe, "top_k": top_k,
              "stop_score": stop_score, "n_run": plan.n, "rung_steps": list(plan.rungs), "sizes": list(plan.sizes),
              "rung_rho": rho}
    return run.result("racing", config, notes)


def _notes(plan, steps: int, rho: list, finishers: int) -> list[str]:
    """What the race did, and how well each rung's scores predicted the final ones."""
    notes = ["every finisher is a plain stock run, never re-noised: candidate i is a stock sampler with seed + i; "
             "the others stopped at the rung that dropped them",
             f"rungs at step(s) {plan.rungs} of {steps}; candidates per segment {plan.sizes} (1 in {plan.eta} "
             f"goes on)"]
    for j, (step, v) in enumerate(zip(plan.rungs, rho)):
        value = f"{v:.3f}" if v is not None else "n/a (fewer than 3 finishers, or all scores equal)"
        notes.append(f"rung {j + 1} (step {step}): Spearman rho between rung and final scores over the {finishers} "
                     f"finishers: {value}")
    return notes


def _unfinish(run: Tracker, at_rung: dict) -> None:
    """Early exit dropped the finishers computed after the stopping one in its chunk: they stay in the log as they
    were at their last rung, as with one candidate per chunk, where they never run."""
    for c in run.dropped:
        c.score, c.sigma, c.nfe, c.members = at_rung[c.id]
        c.final = False
    run.candidates = sorted(run.candidates + run.dropped, key=lambda c: c.id)


def _initial(problem: SearchProblem, batch: Sequence[Candidate]):
    return lambda row: problem.noise(batch[row].id)


def rung_agreement(candidates: Sequence[Candidate], rungs: int) -> list:
    """Per rung, Spearman's rho between the rung scores and the final scores of the candidates that finished; None
    with fewer than 3 finishers or a constant side."""
    finished = [c for c in candidates if c.final]
    if len(finished) < 3:
        return [None] * rungs
    rho = [spearman([c.extra["rungs"][j]["score"] for c in finished], [c.score for c in finished])
           for j in range(rungs)]
    return [None if math.isnan(r) else r for r in rho]

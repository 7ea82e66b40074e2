"""Random Search: best-of-N over the seed's noises (Ma et al. 2025, §3.2)."""

from __future__ import annotations

from typing import Optional

from ._common import Tracker, chunks, stack_rows
from .budget import nfe_fn, plan_random
from .types import Candidate, SearchProblem, SearchResult


def random_search(problem: SearchProblem, *, n: int = 8, budget_nfe: Optional[int] = None,
                  top_k: int = 1, stop_score: Optional[float] = None) -> SearchResult:
    """Sample noise(0..n-1) over the full schedule, score each final sample, keep the best.

    Candidate i is the stock sampler's result for seed + i (see ``seeded_noise``); a budget runs the first
    min(n, budget_nfe // full_cost) of them. With ``stop_score`` it stops at the first candidate (in id order)
    scoring at least that.
    """
    plan = plan_random(nfe_fn(problem.cost), problem.sigmas, n=n, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    for ids in chunks(range(plan.n), problem.max_batch):
        noises = [problem.noise(i) for i in ids]
        batch = [Candidate(id=i, parent=None, round=0, kind="initial", plain=True) for i in ids]
        run.run_chunk(stack_rows(problem, noises), problem.sigmas, batch, final=True, init=noises.__getitem__)
        if run.stop_within(batch):
            break
    notes = ["candidate i is the plain sample of noise(i): a stock sampler with seed + i"]
    if plan.n < n:
        notes.append(f"budget_nfe={budget_nfe} pays for {plan.n} of the {n} candidates ({plan.unit} NFEs each): "
                     f"raise budget_nfe to {n * plan.unit} to run them all")
    config = {"n": n, "budget_nfe": budget_nfe, "top_k": top_k, "stop_score": stop_score, "n_run": plan.n}
    return run.result("random", config, notes)

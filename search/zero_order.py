"""Zero-Order Search: hill-climb on the sphere of the initial noise (Ma et al. 2025, §3.2)."""

from __future__ import annotations

import math
from typing import Optional

from ._common import Tracker, chunks, stack_rows
from .budget import check_step_cos, nfe_fn, plan_zero_order
from .noise import sphere_neighbour
from .types import Candidate, SearchProblem, SearchResult


def zero_order_search(problem: SearchProblem, *, n: int = 4, rounds: int = 4, step_cos: float = 0.95,
                      budget_nfe: Optional[int] = None, top_k: int = 1,
                      stop_score: Optional[float] = None) -> SearchResult:
    """Score the pivot noise(0), then each round ``n`` neighbours at cosine ``step_cos`` to the pivot; a better
    neighbour becomes the pivot (whose score is cached, never re-sampled).

    No improvement in a round (ties included): the pivot stays, the next round draws fresh directions (new ids)
    and the step angle arccos(step_cos) doubles, capped at pi/2, until a round succeeds and it resets.
    A budget scores the pivot and as many neighbours as fit (the last round may be partial).
    The pivot is judged once a round is complete, on the scores of all finals so far (which an aggregate updates).
    With ``stop_score``, no further round starts once the best final scores at least that.
    """
    check_step_cos(step_cos)
    plan = plan_zero_order(nfe_fn(problem.cost), problem.sigmas, n=n, rounds=rounds, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    sigmas = problem.sigmas
    pivot_noise = problem.noise(0)
    pivot = Candidate(id=0, parent=None, round=0, kind="initial", plain=True)
    run.run_chunk(stack_rows(problem, [pivot_noise]), sigmas, [pivot], final=True, init=lambda _: pivot_noise)
    base_angle = angle = math.acos(step_cos)
    next_id = 1
    notes = []
    for r, size in enumerate(plan.rounds, start=1):
        if run.stop_after_round():
            break
        cos = step_cos if angle == base_angle else math.cos(angle)
        ids = range(next_id, next_id + size)
        next_id += size
        scored = []
        for chunk_ids in chunks(ids, problem.max_batch):
            rows = [sphere_neighbour(pivot_noise, problem.noise(i), cos) for i in chunk_ids]
            batch = [Candidate(id=i, parent=pivot.id, round=r, kind="neighbour", extra={"cos": cos})
                     for i in chunk_ids]
            run.run_chunk(stack_rows(problem, rows), sigmas, batch, final=True, init=rows.__getitem__)
            scored.extend(zip(batch, rows))
        round_best = max(scored, key=lambda e: (e[0].score, -e[0].id))
        improved = round_best[0].score > pivot.score
        notes.append(f"round {r}: cos={cos:.6g} (angle {math.degrees(angle):.3g} deg), {size} neighbour(s) of "
                     f"pivot {pivot.id}: " + (f"pivot -> {round_best[0].id}" if improved else "no improvement"))
        if improved:
            pivot, pivot_noise = round_best
            angle = base_angle
        else:
            angle = min(2.0 * angle, math.pi / 2)
    if sum(plan.rounds) < n * rounds:
        notes.append(f"budget_nfe={budget_nfe} pays for the pivot and {sum(plan.rounds)} of the {n * rounds} "
                     f"neighbours ({plan.unit} NFEs each): raise budget_nfe to {(1 + n * rounds) * plan.unit} "
                     f"to run them all")
    notes.append("best_noise is the winner's own initial noise; only candidate 0 is the plain seed "
                 "(neighbours mix the pivot with noise(id) and are not reproducible from a seed alone)")
    config = {"n": n, "rounds": rounds, "step_cos": step_cos, "budget_nfe": budget_nfe, "top_k": top_k,
              "stop_score": stop_score,
              "rounds_run": len(plan.rounds)}
    return run.result("zero_order", config, notes)

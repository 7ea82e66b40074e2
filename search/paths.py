"""Search over Paths: branch kept trajectories by re-noising, denoise a little further, keep the best
(Ma et al. 2025, §3.2)."""

from __future__ import annotations

from typing import Optional

from ._common import Tracker, aggregate_scores, chunks, stack_rows
from .budget import nfe_fn, plan_paths
from .types import Candidate, SearchProblem, SearchResult


def search_over_paths(problem: SearchProblem, *, n: int = 2, m: int = 4, sigma_start: float = 0.75,
                      delta_f: float = 0.05, delta_b: float = 0.1, max_rounds: Optional[int] = None,
                      budget_nfe: Optional[int] = None, top_k: int = 1,
                      stop_score: Optional[float] = None) -> SearchResult:
    """Integrate noise(0..n-1) to ``sigma_start``; each round re-noise every kept path ``m`` times
    ``delta_f`` back up (fresh noise(id)), integrate ``delta_b`` down, score the x0 prediction, keep the top ``n``;
    at sigma 0 the best of the final pool wins.

    Positions are normalized trajectory time (1 = pure noise, 0 = clean) mapped onto the schedule, rounding half
    up: start index round((1 - sigma_start) * steps), f = max(1, round(delta_f * steps)), b = round(delta_b * steps).
    ``max_rounds`` (the paper's L) caps the branching; kept paths then run to sigma 0 unbranched.
    The defaults are ours, not the paper's (we could not confirm its Table 6). A budget shrinks n, then m.
    A round's branches are one comparable set: with an aggregate, their scores are aggregated over the whole round.
    With ``stop_score``, branching ends once a kept path's x0 prediction scores at least that (or a final does)
    and the kept paths run to sigma 0 unbranched.
    """
    plan = plan_paths(nfe_fn(problem.cost), problem.sigmas, n=n, m=m, sigma_start=sigma_start, delta_f=delta_f,
                      delta_b=delta_b, max_rounds=max_rounds, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    sigmas, steps = problem.sigmas, len(problem.sigmas) - 1

    def init(batch):
        return lambda row: problem.noise(batch[row].root)

    pool = []  # (candidate, state at the current index)
    for ids in chunks(range(plan.n), problem.max_batch):
        batch = [Candidate(id=i, parent=None, round=0, kind="initial") for i in ids]
        x_end = run.run_chunk(stack_rows(problem, [problem.noise(i) for i in ids]), sigmas[: plan.start + 1],
                              batch, final=False, score=False)
        pool.extend(zip(batch, x_end))
    next_id = plan.n
    rounds = 0

    for r, (lo, hi) in enumerate(plan.segments, start=1):
        rounds = r
        s_from, s_to = float(sigmas[lo + plan.f]), float(sigmas[lo])
        branches = []
        for parent, state in pool:
            for _ in range(plan.m):
                branches.append((Candidate(id=next_id, parent=parent.id, round=r, kind="path", root=parent.root,
                                           from_noise=False, extra={"segment": [lo, hi]}), state))
                next_id += 1
        scored = []
        for chunk in chunks(branches, problem.max_batch):
            batch = [c for c, _ in chunk]
            x = stack_rows(problem, [state for _, state in chunk])
            fresh = stack_rows(problem, [problem.noise(c.id) for c in batch]).to(x.dtype)
            x = problem.renoise(x, s_from, s_to, fresh)
            x_end = run.run_chunk(x, sigmas[lo: hi + 1], batch, final=hi == steps, init=init(batch))
            scored.extend(zip(batch, x_end))
        if hi != steps:  # final branches are all the finals, which the Tracker aggregates
            aggregate_scores(problem.aggregate, [c for c, _ in scored])
        pool = sorted(scored, key=lambda e: (-e[0].score, e[0].id))[: plan.n]
        if hi != steps and run.stop_after_round(pool[0][0]):
            tail = (hi, steps)
            break
    else:
        tail = plan.tail

    if tail is not None:
        lo, hi = tail
        for chunk in chunks(pool, problem.max_batch):
            batch = []
            for parent, _ in chunk:
                batch.append(Candidate(id=next_id, parent=parent.id, round=rounds + 1, kind="path",
                                       root=parent.root, from_noise=False, extra={"segment": [lo, hi]}))
                next_id += 1
            run.run_chunk(stack_rows(problem, [state for _, state in chunk]), sigmas[lo: hi + 1], batch,
                          final=True, init=init(batch))

    best = run.best
    notes = [
        f"schedule: start at step {plan.start} of {steps}, re-noise {plan.f} step(s) up, denoise {plan.b} step(s) "
        f"down, {len(plan.segments)} planned branching round(s)" + (f", then step {tail[0]} to the end unbranched"
                                                                     if tail else ""),
        f"Search over Paths re-noises mid-way, so best_noise (noise({best.root}), the root of candidate "
        f"{best.id}) alone does not reproduce the best latent",
    ]
    if (plan.n, plan.m) != (n, m):
        notes.append(f"budget_nfe={budget_nfe} shrank N={n}, M={m} to N={plan.n}, M={plan.m} ({plan.total} NFEs)")
    config = {"n": n, "m": m, "sigma_start": sigma_start, "delta_f": delta_f, "delta_b": delta_b,
              "max_rounds": max_rounds, "budget_nfe": budget_nfe, "top_k": top_k, "stop_score": stop_score,
              "n_run": plan.n, "m_run": plan.m,
              "start_step": plan.start, "f_steps": plan.f, "b_steps": plan.b, "rounds_run": rounds}
    return run.result("paths", config, notes, baseline=False)

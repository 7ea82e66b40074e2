"""Trust-region noise search: several regions on the Gaussian shell, each centred on a good noise, grown after a
success, shrunk after failures and restarted from fresh noise once it collapses (TuRBO, Eriksson et al. 2019;
adaptive noise search, Schweiger et al. 2026)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ._common import Tracker, chunks, stack_rows
from .budget import check_grow, check_min_cos, check_patience, check_shrink, check_step_cos, nfe_fn, plan_trust_region
from .noise import sphere_neighbour
from .types import Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor


@dataclass
class Region:
    """One trust region: its centre (a scored final candidate and its noise), angle and failed rounds in a row."""

    centre: Candidate
    noise: Tensor
    angle: float
    failures: int = 0
    restart: bool = False  # collapsed: its next candidates are fresh noises, the best of them the new centre


def _run(run: Tracker, problem: SearchProblem, entries: Sequence[tuple]) -> None:
    """Integrate and score (candidate, initial noise) entries to sigma 0, ``problem.max_batch`` rows at a time."""
    for part in chunks(entries, problem.max_batch):
        rows = [row for _, row in part]
        run.run_chunk(stack_rows(problem, rows), problem.sigmas, [c for c, _ in part], final=True,
                      init=rows.__getitem__)


def _best(entries: Sequence[tuple]) -> tuple:
    return max(entries, key=lambda e: (e[0].score, -e[0].id))


def _cos(angle: float, base_angle: float, step_cos: float) -> float:
    """The region's cosine: exactly ``step_cos`` at the starting angle (no acos/cos round trip)."""
    return step_cos if angle == base_angle else math.cos(angle)


def _propose(region: Region, k: int, i: int, r: int, problem: SearchProblem, base_angle: float,
             step_cos: float) -> tuple:
    """Candidate ``i`` of region ``k`` in round ``r``: a fresh noise if it restarts, else a point on its cap."""
    if region.restart:
        restart = Candidate(id=i, parent=None, round=r, kind="restart", plain=True, extra={"region": k})
        return restart, problem.noise(i)
    cos = _cos(region.angle, base_angle, step_cos)
    row = sphere_neighbour(region.noise, problem.noise(i), cos)
    return Candidate(id=i, parent=region.centre.id, round=r, kind="region", extra={"region": k, "cos": cos}), row


def _update(region: Region, k: int, own: Sequence[tuple], *, base_angle: float, step_cos: float, grow: float,
            shrink: float, patience: int, min_angle: float) -> str:
    """Judge region ``k`` on its complete round (scores as they stand now); returns the round's note on it."""
    best = _best(own)
    if region.restart:
        region.centre, region.noise = best
        region.angle, region.failures, region.restart = base_angle, 0, False
        return f"region {k} restarts at {best[0].id} (best of {len(own)} fresh noise(s))"
    cos = _cos(region.angle, base_angle, step_cos)
    if best[0].score > region.centre.score:
        old = region.centre.id
        region.centre, region.noise = best
        region.angle, region.failures = min(grow * region.angle, math.pi / 2), 0
        return f"region {k} centre {old} -> {best[0].id} at cos={cos:.6g}, angle {math.degrees(region.angle):.3g} deg"
    region.failures += 1
    if region.failures < patience:
        return f"region {k} no improvement on {region.centre.id} at cos={cos:.6g} ({region.failures} of {patience})"
    region.angle, region.failures = shrink * region.angle, 0
    region.restart = region.angle < min_angle
    return (f"region {k} no improvement on {region.centre.id} at cos={cos:.6g}, angle "
            f"{math.degrees(region.angle):.3g} deg" + (": restarts from fresh noise" if region.restart else ""))


def trust_region_search(problem: SearchProblem, *, n: int = 8, regions: int = 2, per_region: int = 2,
                        rounds: int = 4, step_cos: float = 0.9, grow: float = 2.0, shrink: float = 0.5,
                        patience: int = 1, min_cos: float = 0.99, budget_nfe: Optional[int] = None,
                        top_k: int = 1, stop_score: Optional[float] = None) -> SearchResult:
    """Score noise(0..n-1), centre min(regions, n) regions on the best, then each round ``per_region`` candidates
    per region on the cap at its angle (start arccos(step_cos)) around its centre, all regions in one batch.

    A region whose best candidate beats its centre moves there and its angle grows by ``grow`` (capped at pi/2);
    ``patience`` rounds in a row without that shrink it by ``shrink``; below arccos(min_cos) it restarts: its next
    round's candidates are fresh noises and the best of them the new centre at the starting angle. Slot j of a
    round belongs to region j % regions, so a budget's partial last round spreads over the regions.
    Every region is judged once its round is complete, on the scores of all finals so far (which an aggregate
    updates); the initial centres are the top of the complete initial batch.
    """
    check_step_cos(step_cos)
    check_grow(grow)
    check_shrink(shrink)
    check_patience(patience)
    check_min_cos(min_cos)
    plan = plan_trust_region(nfe_fn(problem.cost), problem.sigmas, n=n, regions=regions, per_region=per_region,
                             rounds=rounds, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    initial = [(Candidate(id=i, parent=None, round=0, kind="initial", plain=True), problem.noise(i))
               for i in range(plan.n)]
    _run(run, problem, initial)
    base_angle = math.acos(step_cos)
    ranked = sorted(initial, key=lambda e: (-e[0].score, e[0].id))[: plan.regions]
    state = [Region(centre=c, noise=row, angle=base_angle) for c, row in ranked]
    rules = dict(base_angle=base_angle, step_cos=step_cos, grow=grow, shrink=shrink, patience=patience,
                 min_angle=math.acos(min_cos))
    notes = [f"regions centred on {', '.join(str(c.id) for c, _ in ranked)} (the best of the initial batch)"]
    if plan.regions < regions:
        notes.append(f"regions={regions} is more than the {plan.n} initial candidate(s): {plan.regions} region(s) run")
    next_id = plan.n
    for r, size in enumerate(plan.rounds, start=1):
        if run.stop_after_round():
            break
        entries = [_propose(state[j % plan.regions], j % plan.regions, next_id + j, r, problem, base_angle, step_cos)
                   for j in range(size)]
        next_id += size
        _run(run, problem, entries)
        said = [_update(region, k, [e for e in entries if e[0].extra["region"] == k], **rules)
                for k, region in enumerate(state) if k < size]
        notes.append(f"round {r}: " + "; ".join(said))
    later = min(regions, n) * per_region * rounds
    if plan.n < n or sum(plan.rounds) < later:
        notes.append(f"budget_nfe={budget_nfe} pays for {plan.n} of the {n} initial candidates and "
                     f"{sum(plan.rounds)} of the {later} region candidates ({plan.unit} NFEs each): raise budget_nfe "
                     f"to {(n + later) * plan.unit} to run them all")
    notes.append("best_noise is the winner's own initial noise; initial and restart candidates are plain seeds "
                 "(candidate i: a stock sampler with seed + i), region candidates mix their centre with noise(id)")
    config = {"n": n, "regions": regions, "per_region": per_region, "rounds": rounds, "step_cos": step_cos,
              "stop_score": stop_score,
              "grow": grow, "shrink": shrink, "patience": patience, "min_cos": min_cos, "budget_nfe": budget_nfe,
              "top_k": top_k, "n_run": plan.n, "regions_run": plan.regions, "rounds_run": len(plan.rounds)}
    return run.result("trust_region", config, notes)

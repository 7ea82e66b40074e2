"""Evolutionary Search over initial noises: elitism, tournament selection, Gaussian-preserving mutation
(after EvoSearch, He et al. 2025, arXiv 2505.17618, restricted to the initial noise)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ._common import Tracker, chunks, stack_rows
from .budget import check_mutation, nfe_fn, plan_evolution
from .types import Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor

TOURNAMENT_SEED = 0x45564F  # with the generation index, seeds the tournament draws: the same for every problem


def mutate(parent: Tensor, eps: Tensor, mutation: float) -> Tensor:
    """sqrt(1 - r^2) * parent + r * eps: a N(0, s^2 I) parent and an independent N(0, s^2 I) eps give a
    N(0, s^2 I) child, so offspring stay on the Gaussian the sampler expects. Computed in float64."""
    mixed = math.sqrt(1.0 - mutation * mutation) * parent.to(torch.float64) + mutation * eps.to(torch.float64)
    return mixed.to(dtype=parent.dtype)


def tournaments(population: Sequence[Candidate], count: int, size: int, generation: int) -> list:
    """``count`` parents, each the best (score, then lowest id) of ``size`` members drawn without replacement.

    Members are positions in ``population`` ordered by id, drawn by a CPU generator seeded from
    (TOURNAMENT_SEED, generation): the draws never depend on the problem, the chunking or the global RNG, and
    the first k of a generation's tournaments are the same whatever ``count`` is.
    """
    ordered = sorted(population, key=lambda c: c.id)
    generator = torch.Generator("cpu").manual_seed(TOURNAMENT_SEED * 100_003 + generation)
    draws = []
    for _ in range(count):
        members = [ordered[j] for j in torch.randperm(len(ordered), generator=generator)[:size].tolist()]
        draws.append((max(members, key=lambda c: (c.score, -c.id)), [c.id for c in members]))
    return draws


def evolutionary_search(problem: SearchProblem, *, n: int = 4, generations: int = 6, elite: int = 2,
                        tournament: int = 2, mutation: float = 0.5, budget_nfe: Optional[int] = None,
                        top_k: int = 1, stop_score: Optional[float] = None) -> SearchResult:
    """Score noise(0..n-1); each generation keeps the ``elite`` best of the population unchanged (their scores
    reused, never re-sampled) and fills it up with ``n - elite`` offspring: a tournament of ``tournament`` picks
    each parent, whose noise is mutated with fresh noise(id) at strength ``mutation`` (see ``mutate``).

    A budget runs candidates in order until it is spent: the last generation may be partial (its first
    offspring), and a budget below n candidates runs only the first noises of generation 0 (Random Search).
    Selections are made once a generation is complete, on the scores of all finals so far (which an
    aggregate updates), so nothing depends on ``problem.max_batch``. The defaults (16 candidates) won the
    digits benchmark's sweep (benchmarks/scaling.py): small populations with two elites beat larger ones there.
    """
    check_mutation(mutation)
    plan = plan_evolution(nfe_fn(problem.cost), problem.sigmas, n=n, generations=generations, elite=elite,
                          tournament=tournament, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)

    def sample(members: list) -> None:
        for chunk in chunks(members, problem.max_batch):
            rows = [x for _, x in chunk]
            run.run_chunk(stack_rows(problem, rows), problem.sigmas, [c for c, _ in chunk], final=True,
                          init=rows.__getitem__)

    population = [(Candidate(id=i, parent=None, round=0, kind="initial", plain=True), problem.noise(i))
                  for i in range(plan.generations[0])]  # (candidate, its initial noise)
    sample(population)
    next_id = len(population)
    notes = []
    for g, size in enumerate(plan.generations[1:], start=1):
        if run.stop_after_round():
            break
        elites = sorted(population, key=lambda e: (-e[0].score, e[0].id))[:elite]
        noise_of = {c.id: x for c, x in population}
        offspring = []
        for parent, members in tournaments([c for c, _ in population], size, tournament, g):
            child = Candidate(id=next_id, parent=parent.id, round=g, kind="offspring",
                              extra={"mutation": mutation, "tournament": members})
            offspring.append((child, mutate(noise_of[parent.id], problem.noise(child.id), mutation)))
            next_id += 1
        sample(offspring)
        population = elites + offspring
        notes.append(f"generation {g}: elite {[c.id for c, _ in elites]} kept, {size} offspring of parents "
                     f"{sorted({c.parent for c, _ in offspring})}")
    count = sum(plan.generations)
    if count < plan.wanted:
        notes.append(f"budget_nfe={budget_nfe} pays for {count} of the {plan.wanted} candidates ({plan.unit} NFEs "
                     f"each): raise budget_nfe to {plan.wanted * plan.unit} to run them all")
    notes.append("best_noise is the winner's own initial noise; only generation 0 are plain seeds (offspring mix a "
                 "parent's noise with noise(id) and are not reproducible from a seed alone)")
    config = {"n": n, "generations": generations, "elite": elite, "tournament": tournament, "mutation": mutation,
              "budget_nfe": budget_nfe, "top_k": top_k, "stop_score": stop_score,
              "generations_run": len(plan.generations) - 1}
    return run.result("evolution", config, notes)

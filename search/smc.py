"""Feynman-Kac steering: particles resampled on verifier potentials along the trajectory (Singhal et al. 2025)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ._common import Tracker, aggregate_scores, chunks, stack_rows
from .budget import nfe_fn, plan_smc
from .types import Candidate, SearchProblem, SearchResult

Tensor = torch.Tensor

RESAMPLE_SEED = 0x5EC  # the systematic-resampling offset at resampling point r comes from this seed + r


def potential_step(potential: str, lam: float, reward: float, carry: Optional[float]) -> tuple[float, float]:
    """(log G, the lineage's new carry) for one reward: carry is the running max, the running sum or the last reward.

    max: G = exp(lam * max of the lineage's rewards); sum: exp(lam * their sum); difference: exp(lam * (r_t -
    r_prev)), with r_prev = 0 at the first point (a constant shared by all particles, so it cancels).
    """
    if potential == "max":
        carry = reward if carry is None else max(carry, reward)
        return lam * carry, carry
    if potential == "sum":
        carry = reward + (carry or 0.0)
        return lam * carry, carry
    return lam * (reward - (carry or 0.0)), reward


def normalized_weights(log_weights: Sequence[float]) -> Tensor:
    """Softmax in float64: weights that sum to 1 whatever the scale of the log-weights."""
    return torch.softmax(torch.tensor(list(log_weights), dtype=torch.float64), 0)


def effective_sample_size(weights: Tensor) -> float:
    """1 / sum(w^2) of normalized weights: K when they are equal, 1 when one particle holds all the weight."""
    return float(1.0 / (weights * weights).sum())


def resample_uniform(point: int) -> float:
    """The offset u in [0, 1) of systematic resampling at resampling point ``point``: a CPU generator seeded with
    RESAMPLE_SEED + point, so it depends on neither the problem, the global RNG nor the chunking."""
    generator = torch.Generator("cpu").manual_seed(RESAMPLE_SEED + int(point))
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def systematic_resample(weights: Tensor, u: float) -> list[int]:
    """Ancestor indices, non-decreasing: particle i gets floor or ceil of K * w_i copies (positions u + j on the
    cumulative sum of K * w, which keeps equal weights exact: each particle then keeps itself)."""
    k = len(weights)
    cumulative = torch.cumsum(k * weights.to(torch.float64), 0)
    cumulative[-1] = float(k)
    positions = u + torch.arange(k, dtype=torch.float64)
    return torch.searchsorted(cumulative, positions, right=True).clamp(max=k - 1).tolist()


def smc_search(problem: SearchProblem, *, n: int = 8, potential: str = "difference", lam: float = 10.0,
               ess_threshold: float = 0.5, sigma_start: float = 0.7, sigma_end: float = 0.3, interval: float = 0.2,
               delta_f: float = 0.1, budget_nfe: Optional[int] = None, top_k: int = 1,
               stop_score: Optional[float] = None) -> SearchResult:
    """Run ``n`` particles from noise(0..n-1) together; at each potential point score every particle's x0
    prediction, weight it by its potential (``potential``, temperature ``lam``) and, when the effective sample size
    falls below ``ess_threshold`` * n, resample systematically; all particles reach sigma 0 and the best one wins.

    Points are normalized times (1 = pure noise, 0 = clean) mapped onto the schedule as ``smc_schedule`` says.
    Weights multiply since a lineage was last resampled (standard SMC; resampling resets them to equal).
    Every continuation is a new candidate re-noised ``delta_f`` back up with the exact kernel and fresh
    noise(id), then denoised to the next point, so copies of one particle diverge even under an ODE sampler;
    ``delta_f`` = 0 leaves divergence to the sampler's own noise (ancestral/SDE samplers seed it by candidate id).
    A budget shrinks the particles. With an aggregate, each point's rewards are aggregated over all n particles.
    ``lam`` multiplies the verifier's raw scores, so its strength depends on their spread. Defaults: the digits
    benchmark's best (benchmarks/scaling.py), where the three potentials and lam 3 or 10 tie and lam 0.3 loses.
    """
    plan = plan_smc(nfe_fn(problem.cost), problem.sigmas, n=n, potential=potential, lam=lam,
                    ess_threshold=ess_threshold, sigma_start=sigma_start, sigma_end=sigma_end, interval=interval,
                    delta_f=delta_f, budget_nfe=budget_nfe)
    run = Tracker(problem, plan.total, top_k, stop_score)
    sigmas, steps, k = problem.sigmas, len(problem.sigmas) - 1, plan.n

    def init(batch):
        return lambda row: problem.noise(batch[row].root)

    particles: list = []  # (candidate, state at its point, carry, log-weight since the last resampling)
    ancestors = list(range(k))
    resampled, identical = [], []
    for r, (lo, hi) in enumerate(plan.segments):
        extra = {"segment": [lo, hi]}
        if r == 0:
            rows = [(Candidate(id=i, parent=None, round=0, kind="particle", extra=dict(extra)), problem.noise(i))
                    for i in range(k)]
        else:
            rows = [(Candidate(id=r * k + j, parent=particles[a][0].id, round=r, kind="particle",
                               root=particles[a][0].root, from_noise=False, extra=dict(extra)), particles[a][1])
                    for j, a in enumerate(ancestors)]
        states = []
        for chunk in chunks(rows, problem.max_batch):
            batch = [c for c, _ in chunk]
            x = stack_rows(problem, [state for _, state in chunk])
            if r > 0 and plan.f:
                fresh = stack_rows(problem, [problem.noise(c.id) for c in batch]).to(x.dtype)
                x = problem.renoise(x, float(sigmas[lo + plan.f]), float(sigmas[lo]), fresh)
            states.extend(run.run_chunk(x, sigmas[lo: hi + 1], batch, final=hi == steps, init=init(batch)))
        batch = [c for c, _ in rows]
        if r > 0 and not plan.f:
            identical.extend(_identical_copies(batch, states))
        if hi == steps:
            break
        aggregate_scores(problem.aggregate, batch)
        parents = [particles[a] if r else None for a in ancestors]
        particles = _weigh(batch, states, parents, potential, lam)
        if run.stop_after_round(max(batch, key=lambda c: (c.score, -c.id))):
            _finish(run, problem, batch, states, hi, r + 1, init)
            break
        weights = normalized_weights([p[3] for p in particles])
        for c, w in zip(batch, weights.tolist()):
            c.extra["weight"] = w
        ess = effective_sample_size(weights)
        if ess < ess_threshold * k:
            ancestors = systematic_resample(weights, resample_uniform(r))
            particles = [(c, s, carry, 0.0) for c, s, carry, _ in particles]
            resampled.append((hi, ess))
        else:
            ancestors = list(range(k))

    notes = _notes(plan, steps, potential, lam, ess_threshold, resampled, identical, run.best)
    if k < n:
        notes.append(f"budget_nfe={budget_nfe} pays for {k} of the {n} particles ({plan.unit} NFEs each): raise "
                     f"budget_nfe to {n * plan.unit} to run them all")
    config = {"n": n, "potential": potential, "lam": lam, "ess_threshold": ess_threshold,
              "sigma_start": sigma_start, "sigma_end": sigma_end, "interval": interval, "delta_f": delta_f,
              "budget_nfe": budget_nfe, "top_k": top_k, "stop_score": stop_score, "n_run": k,
              "points": list(plan.points), "f_steps": plan.f, "resampled_at": [p for p, _ in resampled]}
    return run.result("smc", config, notes, baseline=False)


def _weigh(batch: Sequence[Candidate], states: Sequence[Tensor], parents: Sequence[Optional[tuple]],
           potential: str, lam: float) -> list:
    """Each scored particle as (candidate, state, carry, log-weight): its parent's log-weight times its potential."""
    out = []
    for c, state, parent in zip(batch, states, parents):
        log_g, carry = potential_step(potential, lam, c.score, parent[2] if parent else None)
        out.append((c, state, carry, log_g + (parent[3] if parent else 0.0)))
    if not all(math.isfinite(p[3]) for p in out):
        raise ValueError(f"SMC potentials at sigma {batch[0].sigma} are not finite (scores "
                         f"{[c.score for c in batch]}): the verifier must return finite scores")
    return out


def _notes(plan, steps: int, potential: str, lam: float, ess_threshold: float, resampled: list, identical: list,
           best: Candidate) -> list:
    """What the run did: where it weighed and resampled, how copies diverged, and what best_noise means."""
    k = plan.n
    renoised = (f"each continuation re-noised {plan.f} step(s) up with fresh noise(id)" if plan.f else
                "continuations not re-noised: copies diverge only through the sampler's own noise")
    notes = [f"{k} particles, {potential} potential with lam={lam}, at step(s) {plan.points} of {steps}; {renoised}",
             (f"resampled at step(s) {[p for p, _ in resampled]} (effective sample size "
              f"{', '.join(f'{e:.3g}' for _, e in resampled)} below {ess_threshold} x {k})" if resampled else
              f"never resampled: the effective sample size stayed at or above {ess_threshold} x {k}")]
    if plan.f:
        notes.append(f"SMC re-noises mid-way, so best_noise (noise({best.root}), the root of candidate {best.id}) "
                     f"alone does not reproduce the best latent")
    else:
        notes.append(f"best_noise is noise({best.root}), the root of candidate {best.id}; it reproduces the best "
                     f"latent only with a deterministic one-step sampler (each continuation is a new candidate, so "
                     f"ancestral/SDE noise and multistep history restart at every potential point)")
    if identical:
        notes.append(f"copies {identical[:5]} stayed identical: the sampler adds no noise of its own, so duplicated "
                     f"particles only diverge with delta_f > 0")
    return notes


def _identical_copies(batch: Sequence[Candidate], states: Sequence[Tensor]) -> list:
    """[id, id] pairs of copies of one parent whose states are bit-identical after their segment."""
    first: dict = {}
    pairs = []
    for c, s in zip(batch, states):
        if c.parent in first and torch.equal(first[c.parent][1], s):
            pairs.append([first[c.parent][0], c.id])
        first.setdefault(c.parent, (c.id, s))
    return pairs


def _finish(run: Tracker, problem: SearchProblem, batch: list, states: list, lo: int, r: int, init) -> None:
    """Early exit at a potential point: every particle runs from there to sigma 0 without resampling or re-noising."""
    k = len(batch)
    rows = [(Candidate(id=r * k + j, parent=c.id, round=r, kind="particle", root=c.root, from_noise=False,
                       extra={"segment": [lo, len(problem.sigmas) - 1]}), s)
            for j, (c, s) in enumerate(zip(batch, states))]
    for chunk in chunks(rows, problem.max_batch):
        part = [c for c, _ in chunk]
        run.run_chunk(stack_rows(problem, [s for _, s in chunk]), problem.sigmas[lo:], part, final=True,
                      init=init(part))

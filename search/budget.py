"""NFE planning: the exact cost of a search before it runs, and how a budget shrinks it.

The algorithms plan with the same functions, so ``estimate_nfe`` and ``SearchResult.nfe`` cannot drift.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

from .types import Cost

Tensor = torch.Tensor
NfeFn = Callable[[Tensor], int]


class SettingError(ValueError):
    """A search parameter the algorithm cannot run with. `text` writes parameter names as {name}, so a caller
    (a node) can render the message with its own input names; str() uses the parameter names themselves."""

    def __init__(self, param: str, text: str):
        self.param, self.text = param, text
        super().__init__(self.render({}))

    def render(self, names: Mapping[str, str]) -> str:
        return self.text.format_map(_Names(names))


class _Names(dict):
    def __missing__(self, key: str) -> str:
        return key


class BudgetError(ValueError):
    """The NFE budget cannot pay for even the smallest run of the algorithm."""


def nfe_fn(cost: Optional[Cost]) -> NfeFn:
    """NFEs per candidate for a sigma slice, as ``SearchProblem.nfe`` counts them (default: one per step)."""
    if cost is None:
        return lambda sigmas: len(sigmas) - 1
    return lambda sigmas: int(cost(sigmas))


def _check_sigmas(sigmas: Tensor) -> int:
    if sigmas.dim() != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D schedule with at least 2 entries, got shape {tuple(sigmas.shape)}")
    return len(sigmas) - 1


def check_step_cos(step_cos: float) -> None:
    """Zero-Order's neighbour cosine: 1 would never move, below 0 points away from the pivot."""
    if not 0.0 <= step_cos < 1.0:
        raise SettingError("step_cos", f"{{step_cos}} must be in [0, 1) (1 would not move), got {step_cos}")


def check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise SettingError("top_k", f"{{top_k}} must be an integer >= 1, got {top_k!r}")


def _check_budget(budget_nfe: Optional[int]) -> None:
    if budget_nfe is not None and (isinstance(budget_nfe, bool) or int(budget_nfe) != budget_nfe):
        raise SettingError("budget_nfe", f"{{budget_nfe}} must be an integer or None, got {budget_nfe!r}")
    if budget_nfe is not None and budget_nfe < 0:
        raise SettingError("budget_nfe", f"{{budget_nfe}} must be >= 0, got {budget_nfe}")


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise SettingError(name, f"{{{name}}} must be an integer >= 1, got {value!r}")
    return int(value)


def _too_small(algorithm: str, budget_nfe: int, minimum: int, unit: str, unit_cost: int) -> BudgetError:
    return BudgetError(
        f"budget_nfe={budget_nfe} is too small for {algorithm} search: {unit} costs {unit_cost} NFEs, "
        f"so the minimum budget is {minimum}. Raise budget_nfe to at least {minimum} or set it to None."
    )


@dataclass
class RandomPlan:
    n: int  # candidates that will run
    unit: int  # NFEs of one candidate over the full schedule
    total: int


def plan_random(nfe: NfeFn, sigmas: Tensor, *, n: int, budget_nfe: Optional[int] = None) -> RandomPlan:
    """Best-of-N: min(n, budget // full_cost) candidates over the whole schedule."""
    _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n = _positive("n", n)
    unit = nfe(sigmas)
    if budget_nfe is not None:
        if budget_nfe < unit:
            raise _too_small("random", budget_nfe, unit, "one candidate over the full schedule", unit)
        n = min(n, budget_nfe // unit)
    return RandomPlan(n=n, unit=unit, total=n * unit)


@dataclass
class ZeroOrderPlan:
    rounds: list  # neighbours scored in each round (the last one may be partial)
    unit: int
    total: int


def plan_zero_order(nfe: NfeFn, sigmas: Tensor, *, n: int, rounds: int,
                    budget_nfe: Optional[int] = None) -> ZeroOrderPlan:
    """The pivot, then ``rounds`` rounds of ``n`` neighbours, cut to what the budget pays for."""
    _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n = _positive("n", n)
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 0:
        raise SettingError("rounds", f"{{rounds}} must be an integer >= 0, got {rounds!r}")
    unit = nfe(sigmas)
    neighbours = n * int(rounds)
    if budget_nfe is not None:
        if budget_nfe < unit:
            raise _too_small("zero_order", budget_nfe, unit, "scoring the pivot over the full schedule", unit)
        neighbours = min(neighbours, budget_nfe // unit - 1)
    sizes = [n] * (neighbours // n) + ([neighbours % n] if neighbours % n else [])
    return ZeroOrderPlan(rounds=sizes, unit=unit, total=(1 + neighbours) * unit)


def check_mutation(mutation: float) -> None:
    """Evolution's mutation strength r: 0 would copy the parent, above 1 the mix is no longer Gaussian."""
    if not 0.0 < mutation <= 1.0:
        raise SettingError("mutation", f"{{mutation}} must be in (0, 1] (0 would copy the parent, 1 is a fresh "
                                       f"noise), got {mutation}")


@dataclass
class EvolutionPlan:
    generations: list  # candidates sampled in each generation, generation 0 first (the last one may be partial)
    unit: int
    total: int
    wanted: int  # candidates without a budget


def plan_evolution(nfe: NfeFn, sigmas: Tensor, *, n: int, generations: int, elite: int, tournament: int,
                   budget_nfe: Optional[int] = None) -> EvolutionPlan:
    """A population of ``n``, then ``generations`` generations of ``n - elite`` offspring, cut to what the budget
    pays for (candidates in order: a partial generation is the first offspring of the full one)."""
    _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n = _positive("n", n)
    if isinstance(generations, bool) or int(generations) != generations or generations < 0:
        raise SettingError("generations", f"{{generations}} must be an integer >= 0, got {generations!r}")
    if isinstance(elite, bool) or int(elite) != elite or not 0 <= elite < n:
        raise SettingError("elite", f"{{elite}} must be an integer from 0 to {{n}} - 1 = {n - 1} so every generation "
                                    f"has offspring, got {elite!r}")
    if isinstance(tournament, bool) or int(tournament) != tournament or not 1 <= tournament <= n:
        raise SettingError("tournament", f"{{tournament}} must be an integer from 1 to {{n}} = {n} (members are "
                                         f"drawn from the population without replacement), got {tournament!r}")
    unit = nfe(sigmas)
    wanted = count = n + int(generations) * (n - int(elite))
    if budget_nfe is not None:
        if budget_nfe < unit:
            raise _too_small("evolution", budget_nfe, unit, "one candidate over the full schedule", unit)
        count = min(count, budget_nfe // unit)
    offspring = n - int(elite)
    rest = max(0, count - n)
    sizes = [min(n, count)] + [offspring] * (rest // offspring) + ([rest % offspring] if rest % offspring else [])
    return EvolutionPlan(generations=sizes, unit=unit, total=count * unit, wanted=wanted)


@dataclass
class TrustRegionPlan:
    n: int  # initial candidates that will run
    regions: int  # regions that run: min(regions, n)
    rounds: list  # region candidates scored in each round (the last one may be partial)
    unit: int
    total: int


def check_grow(grow: float) -> None:
    """Trust-region growth factor of a region's angle after a success: below 1 it would shrink."""
    if not math.isfinite(grow) or grow < 1.0:
        raise SettingError("grow", f"{{grow}} must be a finite number >= 1 (1 keeps the size), got {grow}")


def check_shrink(shrink: float) -> None:
    """Trust-region shrink factor of a region's angle after `patience` failures: it must make the region smaller."""
    if not 0.0 < shrink < 1.0:
        raise SettingError("shrink", f"{{shrink}} must be in (0, 1), got {shrink}")


def check_min_cos(min_cos: float) -> None:
    """The cosine above which a shrunk region restarts: 1 would never restart, below 0 is wider than any region."""
    if not 0.0 <= min_cos < 1.0:
        raise SettingError("min_cos", f"{{min_cos}} must be in [0, 1) (1 would never restart), got {min_cos}")


def check_patience(patience: int) -> None:
    """Failed rounds in a row before a region shrinks."""
    _positive("patience", patience)


def plan_trust_region(nfe: NfeFn, sigmas: Tensor, *, n: int, regions: int, per_region: int, rounds: int,
                      budget_nfe: Optional[int] = None) -> TrustRegionPlan:
    """``n`` initial candidates, then ``rounds`` rounds of ``per_region`` candidates in each of min(regions, n)
    regions; a budget pays for the initial candidates first, then as many region candidates as fit."""
    _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n, regions, per_region = _positive("n", n), _positive("regions", regions), _positive("per_region", per_region)
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 0:
        raise SettingError("rounds", f"{{rounds}} must be an integer >= 0, got {rounds!r}")
    unit = nfe(sigmas)
    if budget_nfe is not None:
        if budget_nfe < unit:
            raise _too_small("trust_region", budget_nfe, unit, "one initial candidate over the full schedule", unit)
        n = min(n, budget_nfe // unit)
    regions = min(regions, n)
    size = regions * per_region
    later = size * int(rounds)
    if budget_nfe is not None:
        later = min(later, budget_nfe // unit - n)
    sizes = [size] * (later // size) + ([later % size] if later % size else [])
    return TrustRegionPlan(n=n, regions=regions, rounds=sizes, unit=unit, total=(n + later) * unit)


@dataclass
class PathsPlan:
    n: int  # paths kept per round
    m: int  # branches per kept path
    start: int  # schedule index the initial noises are integrated to
    f: int  # forward (re-noising) jump in steps
    b: int  # backward (denoising) run in steps
    segments: list = field(default_factory=list)  # [(lo, hi)]: branch at sigmas[lo], integrate sigmas[lo:hi + 1]
    tail: Optional[tuple] = None  # (lo, hi): unbranched run to sigma 0 after max_rounds, or None
    total: int = 0


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def paths_schedule(steps: int, *, sigma_start: float, delta_f: float, delta_b: float,
                   max_rounds: Optional[int]) -> tuple:
    """Map the paper's normalized times onto schedule indices: (start, f, b, segments, tail). Rounds half up."""
    if not 0.0 < sigma_start <= 1.0:
        raise SettingError("sigma_start", f"{{sigma_start}} must be in (0, 1] (1 = pure noise, 0 = clean), "
                                          f"got {sigma_start}")
    if delta_f <= 0 or delta_b <= 0:
        raise SettingError("delta_f" if delta_f <= 0 else "delta_b",
                           f"{{delta_f}} and {{delta_b}} must be > 0, got {delta_f} and {delta_b}")
    if max_rounds is not None and (isinstance(max_rounds, bool) or int(max_rounds) != max_rounds or max_rounds < 0):
        raise SettingError("max_rounds", f"{{max_rounds}} must be an integer >= 0 or None, got {max_rounds!r}")
    start = _half_up((1.0 - sigma_start) * steps)
    f = max(1, _half_up(delta_f * steps))
    b = _half_up(delta_b * steps)
    if b <= f:
        raise SettingError("delta_b",
            f"Search over Paths needs {{delta_b}} > {{delta_f}} on the schedule: with {steps} steps {{delta_f}}="
            f"{delta_f} is {f} step(s) forward and {{delta_b}}={delta_b} is {b} step(s) back, so paths would never "
            f"advance. Increase {{delta_b}}, decrease {{delta_f}} or use more steps.")
    if start >= steps:
        raise SettingError("sigma_start", f"{{sigma_start}}={sigma_start} starts at step {start} of {steps}: no "
                                          f"steps left to search; raise it.")
    if start < f:
        raise SettingError("sigma_start",
            f"{{sigma_start}}={sigma_start} starts at step {start} of {steps}, less than the {f} step(s) "
            f"{{delta_f}} re-noises back: lower {{sigma_start}} to at most {1 - f / steps:.4g} or lower {{delta_f}}.")
    segments, i = [], start
    while i < steps and (max_rounds is None or len(segments) < max_rounds):
        lo = i - f
        hi = min(lo + b, steps)
        segments.append((lo, hi))
        i = hi
    tail = (i, steps) if i < steps else None
    return start, f, b, segments, tail


def _paths_total(nfe: NfeFn, sigmas: Tensor, n: int, m: int, start: int, segments: list, tail) -> int:
    total = n * nfe(sigmas[: start + 1]) if start > 0 else 0
    total += sum(n * m * nfe(sigmas[lo: hi + 1]) for lo, hi in segments)
    if tail is not None:
        total += n * nfe(sigmas[tail[0]: tail[1] + 1])
    return total


def plan_paths(nfe: NfeFn, sigmas: Tensor, *, n: int, m: int, sigma_start: float, delta_f: float,
               delta_b: float, max_rounds: Optional[int] = None, budget_nfe: Optional[int] = None) -> PathsPlan:
    """Search over Paths (Ma et al. 2025, §3.2); a budget shrinks N, then M, until the plan fits."""
    steps = _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n, m = _positive("n", n), _positive("m", m)
    start, f, b, segments, tail = paths_schedule(steps, sigma_start=sigma_start, delta_f=delta_f,
                                                 delta_b=delta_b, max_rounds=max_rounds)
    total = _paths_total(nfe, sigmas, n, m, start, segments, tail)
    if budget_nfe is not None and total > budget_nfe:
        while n > 1 and total > budget_nfe:
            n -= 1
            total = _paths_total(nfe, sigmas, n, m, start, segments, tail)
        while m > 1 and total > budget_nfe:
            m -= 1
            total = _paths_total(nfe, sigmas, n, m, start, segments, tail)
        if total > budget_nfe:
            raise _too_small("paths", budget_nfe, total, "one path with one branch per round (N=1, M=1)", total)
    return PathsPlan(n=n, m=m, start=start, f=f, b=b, segments=segments, tail=tail, total=total)


SMC_POTENTIALS = ("max", "difference", "sum")


@dataclass
class SmcPlan:
    n: int  # particles
    points: list  # schedule indices where potentials are taken (and particles may be resampled)
    f: int  # re-noising jump in steps before each continuation (0: none)
    segments: list  # [(lo, hi)]: integrate sigmas[lo:hi + 1]; every segment after the first starts re-noised
    unit: int  # NFEs of one particle over all segments
    total: int


def check_smc(potential: str, lam: float, ess_threshold: float) -> None:
    """The settings of SMC's weighting that no cost depends on."""
    if potential not in SMC_POTENTIALS:
        raise SettingError("potential", f"{{potential}} must be one of {', '.join(SMC_POTENTIALS)}, got {potential!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam < math.inf:
        raise SettingError("lam", f"{{lam}} (the potential's temperature) must be a finite number >= 0, got {lam!r}")
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, (int, float)) or \
            not 0.0 <= ess_threshold <= 1.0:
        raise SettingError("ess_threshold", f"{{ess_threshold}} must be in [0, 1] (0 never resamples, 1 resamples "
                                            f"whenever the weights differ), got {ess_threshold!r}")


def smc_schedule(steps: int, *, sigma_start: float, sigma_end: float, interval: float, delta_f: float) -> tuple:
    """Map normalized times (1 = pure noise, 0 = clean) onto schedule indices: (points, f, segments).

    Potentials at round((1 - sigma_start) * steps), then every max(1, round(interval * steps)) steps up to
    round((1 - sigma_end) * steps) and before the last step; f = max(1, round(delta_f * steps)), or 0 when
    delta_f is 0. Rounds half up.
    """
    if not 0.0 < sigma_start <= 1.0:
        raise SettingError("sigma_start", f"{{sigma_start}} must be in (0, 1] (1 = pure noise, 0 = clean), "
                                          f"got {sigma_start}")
    if not 0.0 <= sigma_end <= sigma_start:
        raise SettingError("sigma_end", f"{{sigma_end}} must be in [0, {{sigma_start}}] (the last potential comes no "
                                        f"earlier than the first), got {sigma_end} with {{sigma_start}}={sigma_start}")
    if not 0.0 < interval <= 1.0:
        raise SettingError("interval", f"{{interval}} must be in (0, 1] (a fraction of the schedule), got {interval}")
    if not 0.0 <= delta_f <= 1.0:
        raise SettingError("delta_f", f"{{delta_f}} must be in [0, 1] (0 = no re-noising), got {delta_f}")
    start = _half_up((1.0 - sigma_start) * steps)
    end = min(_half_up((1.0 - sigma_end) * steps), steps - 1)
    every = max(1, _half_up(interval * steps))
    f = max(1, _half_up(delta_f * steps)) if delta_f > 0 else 0
    if start > end:
        raise SettingError("sigma_start", f"{{sigma_start}}={sigma_start} puts the first potential at step {start} "
                                          f"of {steps}, after the last step that can resample ({end}): raise it.")
    if start < f:
        raise SettingError("sigma_start",
            f"{{sigma_start}}={sigma_start} puts the first potential at step {start} of {steps}, less than the {f} "
            f"step(s) {{delta_f}} re-noises back: lower {{sigma_start}} to at most {1 - f / steps:.4g} or lower "
            f"{{delta_f}}.")
    points = list(range(start, end + 1, every))
    segments = [(0, points[0])] + [(p - f, q) for p, q in zip(points, points[1:] + [steps])]
    return points, f, segments


def plan_smc(nfe: NfeFn, sigmas: Tensor, *, n: int, potential: str, lam: float, ess_threshold: float,
             sigma_start: float, sigma_end: float, interval: float, delta_f: float,
             budget_nfe: Optional[int] = None) -> SmcPlan:
    """SMC / FK steering (Singhal et al. 2025): ``n`` particles over the segments; a budget shrinks the particles."""
    steps = _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n = _positive("n", n)
    check_smc(potential, lam, ess_threshold)
    points, f, segments = smc_schedule(steps, sigma_start=sigma_start, sigma_end=sigma_end, interval=interval,
                                       delta_f=delta_f)
    unit = sum(nfe(sigmas[lo: hi + 1]) for lo, hi in segments)
    if budget_nfe is not None:
        if budget_nfe < unit:
            raise _too_small("smc", budget_nfe, unit, "one particle with its re-noising", unit)
        n = min(n, budget_nfe // unit)
    return SmcPlan(n=n, points=points, f=f, segments=segments, unit=unit, total=n * unit)


@dataclass
class RacingPlan:
    n: int  # seeds that start
    eta: int  # 1 in eta go on at each rung
    rungs: list  # schedule indices where survivors are scored and cut, increasing
    sizes: list  # candidates running each segment: sizes[j] runs from rungs[j - 1] (0 first) to rungs[j] (end last)
    segments: list  # [(lo, hi)]: the slices the survivors of each segment integrate, the last ending at the end
    costs: list  # NFEs of one candidate over each segment (prefix differences of one uninterrupted run)
    total: int


def parse_rungs(rungs) -> list:
    """Rung positions as floats, from a sequence or a comma-separated string ("0.75, 0.5")."""
    if isinstance(rungs, str):
        try:
            return [float(part) for part in rungs.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise SettingError("rungs", f"{{rungs}} must be numbers separated by commas (trajectory times, 1 = pure "
                                        f"noise, 0 = clean, e.g. 0.75, 0.5), got {rungs!r}") from None
    return [float(r) for r in rungs]


def racing_schedule(steps: int, rungs) -> list:
    """Rung times (1 = pure noise, 0 = clean) -> increasing schedule indices, round((1 - t) * steps) half up."""
    times = parse_rungs(rungs)
    if not times:
        raise SettingError("rungs", "{rungs} is empty: give at least one trajectory time, e.g. 0.75")
    bad = [t for t in times if not 0.0 < t < 1.0]
    if bad:
        raise SettingError("rungs", f"{{rungs}} must lie strictly between 1 (pure noise) and 0 (clean), got {bad}")
    indices = sorted({_half_up((1.0 - t) * steps) for t in times})
    outside = [i for i in indices if not 0 < i < steps]
    if outside:
        raise SettingError("rungs", f"{{rungs}}={', '.join(f'{t:g}' for t in times)} put a rung at step(s) "
                                    f"{outside} of {steps}, where there is nothing to compare (step 0) or nothing "
                                    f"left to save (the last step): move them inside, or use more steps.")
    if len(indices) < len(times):
        raise SettingError("rungs", f"{{rungs}}={', '.join(f'{t:g}' for t in times)} fall on the same steps of "
                                    f"{steps} ({indices}): space them further apart or use more steps.")
    return indices


def _racing_sizes(n: int, eta: int, rungs: int) -> list:
    sizes = [n]
    for _ in range(rungs):
        sizes.append(max(1, math.ceil(sizes[-1] / eta)))
    return sizes


def plan_racing(nfe: NfeFn, sigmas: Tensor, *, n: int, eta: int, rungs,
                budget_nfe: Optional[int] = None) -> RacingPlan:
    """Successive halving over seeds: all ``n`` run to the first rung, the best ceil(k / eta) of each rung's ``k``
    go on, the last ones finish. A budget picks the largest n that fits.

    A segment costs what one uninterrupted run spends between its ends, nfe(sigmas[:hi + 1]) - nfe(sigmas[:lo + 1]),
    since every candidate continues its own stock run.
    """
    steps = _check_sigmas(sigmas)
    _check_budget(budget_nfe)
    n = _positive("n", n)
    if isinstance(eta, bool) or int(eta) != eta or eta < 2:
        raise SettingError("eta", f"{{eta}} must be an integer >= 2 (1 in {{eta}} candidates goes on at each rung), "
                                  f"got {eta!r}")
    indices = racing_schedule(steps, rungs)
    ends = [0] + indices + [steps]
    segments = list(zip(ends, ends[1:]))
    prefix = [0] + [nfe(sigmas[: i + 1]) for i in ends[1:]]
    costs = [b - a for a, b in zip(prefix, prefix[1:])]

    def total(count: int) -> int:
        return sum(k * c for k, c in zip(_racing_sizes(count, int(eta), len(indices)), costs))

    if budget_nfe is not None:
        if total(1) > budget_nfe:
            raise _too_small("racing", budget_nfe, total(1), "one seed over the full schedule", total(1))
        while total(n) > budget_nfe:
            n -= 1
    sizes = _racing_sizes(n, int(eta), len(indices))
    return RacingPlan(n=n, eta=int(eta), rungs=indices, sizes=sizes, segments=segments, costs=costs, total=total(n))


_PLANS = {"random": plan_random, "zero_order": plan_zero_order, "paths": plan_paths, "smc": plan_smc,
          "trust_region": plan_trust_region, "evolution": plan_evolution, "racing": plan_racing}
_CHECKS = {"step_cos": check_step_cos, "top_k": check_top_k, "grow": check_grow, "shrink": check_shrink,
           "min_cos": check_min_cos, "patience": check_patience,
           "mutation": check_mutation}  # parameters no plan needs, checked all the same


def estimate_nfe(algorithm: str, sigmas: Tensor, cost: Optional[Cost] = None, budget_nfe: Optional[int] = None,
                 **config) -> int:
    """Exactly the NFEs ``run_search(algorithm, ...)`` with this schedule, cost, budget and config will spend.

    Checks every setting on the way: the one validation path for search settings (SettingError, BudgetError).
    """
    from . import ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise SettingError("algorithm",
                           f"unknown search {{algorithm}} {algorithm!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    params = inspect.signature(ALGORITHMS[algorithm]).parameters
    unknown = sorted(set(config) - set(params) - {"problem"})
    if unknown:
        raise TypeError(f"{algorithm} search has no parameter(s) {', '.join(unknown)}")
    for name, check in _CHECKS.items():
        if name in params:
            check(config.get(name, params[name].default))
    plan = _PLANS[algorithm]
    wanted = set(inspect.signature(plan).parameters) - {"nfe", "sigmas", "budget_nfe"}
    kwargs = {k: config.get(k, params[k].default) for k in wanted}
    return plan(nfe_fn(cost), sigmas, budget_nfe=budget_nfe, **kwargs).total

"""Inference-time scaling in miniature: more denoising steps vs. noise search at equal NFE (Ma et al. 2025, Fig. 1).

    python benchmarks/scaling.py                 # full run: budgets 1x 4x 16x 64x, 10 classes x 50 seeds
    python benchmarks/scaling.py --quick         # 1x 4x 16x, 10 classes x 10 seeds (under two minutes)
    python benchmarks/scaling.py --json out.json # also write the rows

One sample is `--steps` Euler steps of the tiny rectified-flow digit model (train_digits.py), so 1x = that many
NFEs. Every search ranks candidates with the verifier MLP; the evaluator CNN (other architecture, other data)
judges the winners and supplies the features of the Fréchet distance to held-out digits. Both see samples
clipped to the data range [-1, 1], the miniature's "decode". The printed table adds `spread` (within-class
pixel distance of the winners, a diversity gauge) which the JSON rows leave out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from _pack import load_pack

load_pack()

from noise_search.search import RENOISE, SearchProblem, SearchResult, estimate_nfe, run_search, seeded_noise  # noqa: E402

from digits_models import (  # noqa: E402
    NUM_CLASSES,
    SHAPE,
    WEIGHTS,
    euler,
    flow_sigmas,
    frechet_distance,
    load_model,
    load_splits,
    velocity_fn,
)

KEYS = ("method", "budget_nfe", "nfe_spent", "verifier_score", "eval_accuracy", "frechet", "seconds")
METHODS = ("steps", "random", "zero_order", "paths", "smc", "trust_region", "evolution", "racing")
FULL = {"multiples": (1, 4, 16, 64), "seeds": 50}
QUICK = {"multiples": (1, 4, 16), "seeds": 10}
ZERO_ORDER = {"n": 4, "step_cos": 0.9}
PATHS = {"m": 4, "sigma_start": 0.7, "delta_f": 0.1, "delta_b": 0.3}
SMC = {"potential": "difference", "lam": 10.0, "ess_threshold": 0.5, "sigma_start": 0.7, "sigma_end": 0.3,
       "interval": 0.2, "delta_f": 0.1}
TRUST_REGION = {"regions": 2, "per_region": 2, "step_cos": 0.9}
TRUST_REGION_INITIAL = 4  # one in this many candidates of a budget is an initial (random) one
EVOLUTION = {"n": 4, "elite": 2, "tournament": 2, "mutation": 0.5}
RACING = {"eta": 4, "rungs": (0.9, 0.8, 0.6)}


def to_image(x: torch.Tensor) -> torch.Tensor:
    """The 'decode' step: clip a model state to the data range [-1, 1], as a VAE decode clips to valid pixels."""
    return x.clamp(-1.0, 1.0)


def verifier_log_odds(verifier: torch.nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
    """log p(label) - log(1 - p(label)): ranks like the log-probability but does not saturate at 0 for confident
    samples (a float32 log-probability ties at exactly 0.0 there)."""
    logits = verifier(x).double()
    others = torch.cat([logits[:, :label], logits[:, label + 1:]], dim=1)
    return logits[:, label] - others.logsumexp(1)


def make_problem(models: dict, label: int, seed: int, steps: int, guidance: float, max_batch: int = 64,
                 on_call: Optional[Callable[[int], None]] = None) -> SearchProblem:
    """One prompt of the benchmark: class `label`, noise seed `seed`, `steps` Euler steps, verifier log-odds."""
    v = velocity_fn(models["flow"], label, guidance)

    def integrate(x, sigmas, batch):
        with torch.no_grad():
            return euler(v, x, sigmas, on_call)

    def score(x0, sigma, batch):
        with torch.no_grad():
            return verifier_log_odds(models["verifier"], to_image(x0), label)

    return SearchProblem(
        integrate=integrate, score=score, sigmas=flow_sigmas(steps), noise=seeded_noise(seed, SHAPE),
        renoise=RENOISE["flow"], cost=lambda sigmas: len(sigmas) - 1, max_batch=max_batch,
    )


def method_config(method: str, multiple: int, steps: int) -> tuple[int, dict]:
    """(sampler steps, search config) that spends at most `multiple` x one sample.

    "steps" is one plain sample with multiple x steps. The searches keep `steps` and let their budget cut the
    plan: Random runs `multiple` candidates, Zero-Order a pivot plus 4-neighbour rounds, Paths shrinks N then M,
    Trust Region spends a quarter on initial candidates and the rest on region rounds. Evolution runs its
    population of 4, then 2 offspring a generation until the budget is spent (so at 1x and 4x it is generation 0
    alone: the plain sample, then Random's four noises).
    At 1x Paths cannot afford one branch, so it runs unbranched (max_rounds=0): the plain sample. SMC lets the
    budget cut its particles; at 1x it cannot afford re-noising, so it runs one particle without it (delta_f=0):
    the plain sample. Racing starts as many seeds as the budget pays for (at 1x one: the plain sample).
    """
    if method == "steps":
        return steps * multiple, {"n": 1}
    if method == "random":
        return steps, {"n": multiple}
    if method == "zero_order":
        return steps, {**ZERO_ORDER, "rounds": multiple}
    if method == "paths":
        return steps, {**PATHS, "n": multiple, "max_rounds": 0 if multiple == 1 else None}
    if method == "smc":
        return steps, {**SMC, "n": multiple, **({"delta_f": 0.0} if multiple == 1 else {})}
    if method == "trust_region":
        return steps, {**TRUST_REGION, "n": max(1, multiple // TRUST_REGION_INITIAL), "rounds": multiple}
    if method == "evolution":
        return steps, {**EVOLUTION, "generations": multiple}  # more than any budget here pays for
    if method == "racing":  # the budget picks how many seeds start; rungs kept on distinct steps of short schedules
        at = sorted({min(steps - 1, max(1, math.floor((1 - t) * steps + 0.5))) for t in RACING["rungs"]})
        return steps, {**RACING, "rungs": tuple(1 - i / steps for i in at), "n": 4096}
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def run_method(models: dict, method: str, multiple: int, labels: Sequence[int], seeds: Sequence[int], *,
               steps: int, guidance: float, max_batch: int = 64) -> tuple[dict, torch.Tensor, list]:
    """Search every (label, seed) prompt at one budget; returns the row (without frechet), winners and labels."""
    budget = steps * multiple
    sample_steps, config = method_config(method, multiple, steps)
    algorithm = "random" if method == "steps" else method
    planned = estimate_nfe(algorithm, flow_sigmas(sample_steps), budget_nfe=budget, **config)
    if planned > budget:
        raise RuntimeError(f"internal: {method} at {multiple}x plans {planned} NFEs over the budget {budget}")
    winners, targets, spent, scores = [], [], [], []
    start = time.perf_counter()
    for seed in seeds:
        for label in labels:
            noise_seed = 10_000 * (NUM_CLASSES * seed + label)
            problem = make_problem(models, label, noise_seed, sample_steps, guidance, max_batch)
            result: SearchResult = run_search(algorithm, problem, budget_nfe=budget, **config)
            if result.nfe > budget:
                raise RuntimeError(f"{method} at {multiple}x spent {result.nfe} NFEs, over the budget {budget}")
            winners.append(result.best)
            targets.append(label)
            spent.append(result.nfe)
    seconds = time.perf_counter() - start
    x = to_image(torch.stack(winners))
    y = torch.tensor(targets)
    with torch.no_grad():
        for label in labels:
            scores.append(verifier_log_odds(models["verifier"], x[y == label], label))
        accuracy = (models["evaluator"](x).argmax(1) == y).double().mean()
    row = {
        "method": method, "budget_nfe": budget, "nfe_spent": float(np.mean(spent)),
        "verifier_score": float(torch.cat(scores).mean()), "eval_accuracy": float(accuracy), "seconds": seconds,
    }
    return row, x, targets


def evaluator_features(models: dict, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return models["evaluator"].features(x).double().numpy()


def within_class_spread(x: torch.Tensor, labels: Sequence[int]) -> float:
    """Mean pixel L2 distance between two samples of the same class, averaged over classes: a diversity gauge."""
    y = torch.as_tensor(list(labels))
    spreads = []
    for c in y.unique():
        xc = x[y == c].flatten(1).double()
        if len(xc) > 1:
            spreads.append(torch.cdist(xc, xc).sum() / (len(xc) * (len(xc) - 1)))
    return float(torch.stack(spreads).mean()) if spreads else float("nan")


def run_benchmark(models: dict, *, methods: Sequence[str] = METHODS, multiples: Sequence[int] = FULL["multiples"],
                  labels: Sequence[int] = tuple(range(NUM_CLASSES)), seeds: Sequence[int] = tuple(range(FULL["seeds"])),
                  steps: int = 10, guidance: float = 1.0, max_batch: int = 64,
                  reference: Optional[torch.Tensor] = None, spread: Optional[list] = None) -> list[dict]:
    """One row per (method, budget) with exactly KEYS; Fréchet against `reference` (default: held-out digits).

    If `spread` is a list, each row's within-class spread of the winners is appended to it (not a row key).
    """
    if reference is None:
        reference = load_splits()["heldout"][0]
    ref_features = evaluator_features(models, reference)
    rows = []
    for multiple in multiples:
        for method in methods:
            row, x, targets = run_method(models, method, multiple, labels, seeds, steps=steps, guidance=guidance,
                                         max_batch=max_batch)
            row["frechet"] = frechet_distance(evaluator_features(models, x), ref_features)
            rows.append({k: row[k] for k in KEYS})
            if spread is not None:
                spread.append(within_class_spread(x, targets))
    return rows


def real_reference(models: dict, per_class: int) -> tuple[float, float]:
    """(Fréchet, within-class spread) of `per_class` real digits per class (generator split, never seen by the
    evaluator): what a perfect sampler scores at this sample size (small samples bias the Fréchet upwards)."""
    gen_x, gen_y = load_splits()["generator"]
    keep = torch.cat([torch.nonzero(gen_y == c).flatten()[:per_class] for c in range(NUM_CLASSES)])
    ref = evaluator_features(models, load_splits()["heldout"][0])
    return (frechet_distance(evaluator_features(models, gen_x[keep]), ref),
            within_class_spread(gen_x[keep], gen_y[keep].tolist()))


def format_table(rows: Sequence[dict], steps: int, spread: Optional[Sequence[float]] = None) -> str:
    spread = list(spread) if spread is not None else [None] * len(rows)
    lines = [f"{'method':<12} {'budget':>7} {'x':>4} {'nfe_spent':>9} {'verifier':>9} {'eval_acc':>8} {'frechet':>8} "
             f"{'seconds':>8}" + (f" {'spread':>7}" if spread[0] is not None else "")]
    for r, d in zip(rows, spread):
        lines.append(f"{r['method']:<12} {r['budget_nfe']:>7} {r['budget_nfe'] // steps:>4} {r['nfe_spent']:>9.1f} "
                     f"{r['verifier_score']:>9.3f} {r['eval_accuracy']:>8.3f} {r['frechet']:>8.2f} {r['seconds']:>8.2f}"
                     + (f" {d:>7.3f}" if d is not None else ""))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"budgets {QUICK['multiples']}x, {QUICK['seeds']} seeds")
    parser.add_argument("--seeds", type=int,
                        help=f"noise seeds per class (default: {FULL['seeds']}, quick: {QUICK['seeds']})")
    parser.add_argument("--multiples", type=int, nargs="+", help="budgets as multiples of one sample")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=10, help="Euler steps of one sample (= NFEs of 1x)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (paper: 1.0)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the rows here as a JSON list")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    multiples = args.multiples or preset["multiples"]
    seeds = range(args.seeds if args.seeds is not None else preset["seeds"])
    torch.set_num_threads(args.threads)
    models = {name: load_model(name, args.weights) for name in ("flow", "verifier", "evaluator")}
    start = time.perf_counter()
    spread: list = []
    rows = run_benchmark(models, methods=args.methods, multiples=multiples, seeds=seeds, steps=args.steps,
                         guidance=args.guidance, spread=spread)
    print(format_table(rows, args.steps, spread))
    real_frechet, real_spread = real_reference(models, len(seeds))
    print(f"{NUM_CLASSES} classes x {len(seeds)} seeds per row, guidance {args.guidance}, "
          f"1x = {args.steps} Euler steps; "
          f"as many real digits: frechet {real_frechet:.2f}, spread {real_spread:.3f}; "
          f"total {time.perf_counter() - start:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()

"""Noise search algorithms (pure PyTorch): Random Search, Zero-Order Search, Search over Paths (Ma et al. 2025),
Feynman-Kac / SMC steering (Singhal et al. 2025), trust-region search, Evolutionary Search (after He et al. 2025),
seed racing (successive halving over stock seeds)."""

from __future__ import annotations

from typing import Callable

from ._common import check_stop_score
from .budget import BudgetError, SettingError, estimate_nfe
from .evolution import evolutionary_search
from .noise import RENOISE, renoise_flow, renoise_ve, seeded_noise, sphere_neighbour
from .paths import search_over_paths
from .racing import racing_search
from .random_search import random_search
from .smc import smc_search
from .trust_region import trust_region_search
from .types import Candidate, SearchProblem, SearchResult
from .zero_order import zero_order_search

ALGORITHMS: dict[str, Callable[..., SearchResult]] = {
    "random": random_search, "zero_order": zero_order_search, "paths": search_over_paths, "smc": smc_search,
    "trust_region": trust_region_search, "evolution": evolutionary_search, "racing": racing_search,
}


def run_search(algorithm: str, problem: SearchProblem, **config) -> SearchResult:
    """Run the named algorithm (a key of ALGORITHMS) with its keyword hyperparameters."""
    if algorithm not in ALGORITHMS:
        raise SettingError("algorithm",
                           f"unknown search {{algorithm}} {algorithm!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[algorithm](problem, **config)


__all__ = [
    "ALGORITHMS", "BudgetError", "Candidate", "RENOISE", "SearchProblem", "SearchResult", "SettingError",
    "check_stop_score", "estimate_nfe", "evolutionary_search", "racing_search", "random_search", "renoise_flow",
    "renoise_ve",
    "run_search", "search_over_paths", "seeded_noise", "smc_search", "sphere_neighbour", "trust_region_search",
    "zero_order_search",
]

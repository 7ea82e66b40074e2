"""Noise search algorithms (pure PyTorch): Random Search, Zero-Order Search, Search over Paths (Ma et al. 2025),
Evolutionary Search (after He et al. 2025)."""

from __future__ import annotations

from typing import Callable

from .budget import BudgetError, SettingError, estimate_nfe
from .evolution import evolutionary_search
from .noise import RENOISE, renoise_flow, renoise_ve, seeded_noise, sphere_neighbour
from .paths import search_over_paths
from .random_search import random_search
from .types import Candidate, SearchProblem, SearchResult
from .zero_order import zero_order_search

ALGORITHMS: dict[str, Callable[..., SearchResult]] = {
    "random": random_search, "zero_order": zero_order_search, "paths": search_over_paths,
    "evolution": evolutionary_search,
}


def run_search(algorithm: str, problem: SearchProblem, **config) -> SearchResult:
    """Run the named algorithm (a key of ALGORITHMS) with its keyword hyperparameters."""
    if algorithm not in ALGORITHMS:
        raise SettingError("algorithm", f"unknown search {{algorithm}} {algorithm!r}; valid: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[algorithm](problem, **config)


__all__ = [
    "ALGORITHMS", "BudgetError", "Candidate", "SettingError", "RENOISE", "SearchProblem", "SearchResult", "estimate_nfe",
    "evolutionary_search", "random_search", "renoise_flow", "renoise_ve", "run_search", "search_over_paths", "seeded_noise",
    "sphere_neighbour", "zero_order_search",
]

"""Nothing silent: every setting a search runs anyway but cannot honour as given leaves a note in its result."""

import pytest
import torch

from noise_search.search import run_search
from noise_search.search.noise import renoise_ve, seeded_noise
from noise_search.search.types import SearchProblem
from noise_search.tests.helpers.toys import SHAPE


def _problem() -> SearchProblem:
    def integrate(x, sigmas, batch):
        return 0.5 * x + 1, 0.5 * x + 1

    def score(x0, sigma, batch):
        return -x0.flatten(1).pow(2).sum(1)

    return SearchProblem(integrate=integrate, score=score, sigmas=torch.linspace(1, 0, 5), noise=seeded_noise(3, SHAPE),
                         renoise=renoise_ve, max_batch=4)


@pytest.mark.parametrize("algorithm, config, needle", [
    ("random", {"n": 4096, "budget_nfe": 8}, "budget_nfe=8 pays for 2 of the 4096 candidates"),
    ("zero_order", {"n": 4, "rounds": 3, "budget_nfe": 12}, "budget_nfe=12 pays for the pivot and 2 of the 12"),
    ("paths", {"n": 4, "m": 4, "sigma_start": 0.5, "delta_f": 0.25, "delta_b": 0.5, "budget_nfe": 10},
     "budget_nfe=10 shrank N=4, M=4"),
])
def test_a_budget_that_shrinks_the_search_says_so(algorithm, config, needle):
    result = run_search(algorithm, _problem(), **config)
    assert any(needle in note for note in result.notes), result.notes


def test_no_budget_note_when_the_budget_pays_for_everything():
    result = run_search("random", _problem(), n=2, budget_nfe=8)
    assert not any("budget_nfe" in note for note in result.notes), result.notes


def test_top_k_larger_than_the_finals_says_so():
    result = run_search("random", _problem(), n=3, top_k=5)
    assert result.topk.shape[0] == 3
    assert any("top_k=5 is larger than the 3 final candidate(s)" in note for note in result.notes), result.notes
    assert not any("top_k" in note for note in run_search("random", _problem(), n=3, top_k=3).notes)

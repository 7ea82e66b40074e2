"""Random Search: best-of-N correctness, exact NFE accounting, budgets, determinism, batch-size invariance."""

import pytest
import torch

from noise_search.search import BudgetError, estimate_nfe, random_search, run_search
from noise_search.search.noise import renoise_ve, seeded_noise
from noise_search.search.types import SearchProblem
from noise_search.tests.helpers.toys import SHAPE, Toy, assert_bit_identical, heun_cost


def _affine_problem(target, max_batch=8):
    """integrate is the fixed map x -> 0.5 x + 1, so the best of N noises is known without sampling."""
    noise = seeded_noise(7, SHAPE)

    def integrate(x, sigmas, batch):
        return 0.5 * x + 1, 0.5 * x + 1

    def score(x0, sigma, batch):
        return -((x0 - target) ** 2).flatten(1).sum(1)

    return SearchProblem(integrate=integrate, score=score, sigmas=torch.linspace(1, 0, 5), noise=noise,
                         renoise=renoise_ve, max_batch=max_batch), noise


def test_random_search_picks_the_analytic_argmin_over_the_noises():
    target = torch.full(SHAPE, 1.3)
    problem, noise = _affine_problem(target, max_batch=3)
    distances = [((0.5 * noise(i) + 1 - target) ** 2).sum().item() for i in range(11)]
    order = sorted(range(11), key=distances.__getitem__)
    result = random_search(problem, n=11, top_k=3)
    assert result.best_id == order[0]
    assert result.topk_ids == order[:3]
    assert torch.equal(result.best_noise, noise(order[0]))
    assert torch.allclose(result.best, 0.5 * noise(order[0]) + 1)
    assert torch.allclose(result.topk, torch.stack([0.5 * noise(i) + 1 for i in order[:3]]))
    assert result.best_score == pytest.approx(-distances[order[0]], rel=1e-5)
    assert result.baseline_score == pytest.approx(-distances[0], rel=1e-5)
    assert [c.id for c in result.candidates] == list(range(11))
    assert all(c.sigma == 0.0 and c.kind == "initial" and c.parent is None for c in result.candidates)


@pytest.mark.parametrize("steps,cost,n,budget,expected_n", [
    (10, None, 5, None, 5), (10, heun_cost, 5, None, 5), (10, None, 5, 37, 3), (10, heun_cost, 5, 59, 2),
    (7, heun_cost, 4, 1000, 4), (3, None, 6, 3, 1),
])
def test_random_search_spends_exactly_the_planned_nfes(steps, cost, n, budget, expected_n):
    toy = Toy(steps=steps, cost=cost, max_batch=2)
    unit = steps * (2 if cost else 1)
    planned = estimate_nfe("random", toy.sigmas, cost=cost, budget_nfe=budget, n=n)
    result = random_search(toy.problem(), n=n, budget_nfe=budget)
    assert result.nfe == result.nfe_planned == planned == expected_n * unit
    assert budget is None or result.nfe <= budget
    assert len(result.candidates) == expected_n
    assert sum(len(ids) for ids, _, _ in toy.integrate_calls) == expected_n
    assert [c.nfe for c in result.candidates] == [unit * min(2 * (i // 2 + 1), expected_n) for i in range(expected_n)]


def test_random_search_budget_too_small_names_the_minimum():
    toy = Toy(steps=10, cost=heun_cost)
    with pytest.raises(BudgetError, match=r"costs 20 NFEs, so the minimum budget is 20") as err:
        random_search(toy.problem(), n=4, budget_nfe=19)
    assert isinstance(err.value, ValueError)
    assert not toy.integrate_calls
    with pytest.raises(BudgetError, match="minimum budget is 20"):
        estimate_nfe("random", toy.sigmas, cost=heun_cost, budget_nfe=19, n=4)


def test_random_search_is_deterministic_and_batch_size_invariant():
    results = []
    for max_batch in (1, 3, 8, 8):
        toy = Toy(steps=8, max_batch=max_batch)
        results.append(random_search(toy.problem(), n=7, top_k=4))
        assert max(len(ids) for ids, _, _ in toy.integrate_calls) == min(max_batch, 7)
    assert_bit_identical(results)
    assert results[2].to_dict() == results[3].to_dict()


def test_random_search_reports_progress_curve_and_members_after_every_chunk():
    toy = Toy(steps=5, max_batch=3)
    result = random_search(toy.problem(), n=7)
    assert [p[0] for p in toy.progress_log] == [15, 30, 35]
    assert all(p[1] == 35 for p in toy.progress_log)
    assert [n for n, _ in result.curve] == [15, 30, 35]
    bests = [s for _, s in result.curve]
    assert bests == sorted(bests) and bests[-1] == result.best_score
    assert toy.progress_log[-1][2] == result.best_score and toy.progress_log[-1][3].id == result.best_id
    for c in result.candidates:
        assert c.members["neg_dist"] == c.score and set(c.members) == {"neg_dist", "mean"}
    assert toy.scored_sigmas == [0.0, 0.0, 0.0]
    assert result.to_dict()["nfe"] == 35


def test_random_search_top_k_larger_than_n_and_bad_arguments():
    toy = Toy(steps=4)
    result = random_search(toy.problem(), n=3, top_k=10)
    assert result.topk.shape == (3, *SHAPE) and sorted(result.topk_ids) == [0, 1, 2]
    assert result.topk_scores == sorted(result.topk_scores, reverse=True)
    with pytest.raises(ValueError, match="n must be"):
        random_search(toy.problem(), n=0)
    with pytest.raises(ValueError, match="top_k"):
        random_search(toy.problem(), n=2, top_k=0)
    with pytest.raises(ValueError, match="max_batch"):
        random_search(toy.problem(max_batch=0), n=2)


def test_exceptions_from_integrate_and_score_propagate():
    class Interrupted(Exception):
        pass

    def boom(*args):
        raise Interrupted("cancelled")

    toy = Toy(steps=4)
    with pytest.raises(Interrupted):
        random_search(toy.problem(integrate=boom), n=2)
    with pytest.raises(Interrupted):
        run_search("random", toy.problem(score=boom), n=2)
    with pytest.raises(ValueError, match="one score per row"):
        random_search(toy.problem(score=lambda x0, s, b: torch.zeros(1)), n=2)
    with pytest.raises(ValueError, match="NaN"):
        random_search(toy.problem(score=lambda x0, s, b: torch.full((len(b),), float("nan"))), n=2)

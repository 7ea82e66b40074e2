"""Zero-Order Search: sphere neighbours, the pivot rule, no-improvement rule, NFE accounting, invariance."""

import math

import pytest
import torch

from noise_search.search import BudgetError, estimate_nfe, run_search, zero_order_search
from noise_search.tests.helpers.toys import Recording, Toy, assert_bit_identical, heun_cost


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def test_neighbours_sit_on_the_pivot_sphere_at_step_cos():
    toy = Recording(steps=5, max_batch=3)
    result = zero_order_search(toy.problem(), n=4, rounds=3, step_cos=0.9)
    neighbours = [c for c in result.candidates if c.kind == "neighbour"]
    assert len(neighbours) == 12
    for c in neighbours:
        x, pivot = toy.inputs[c.id], toy.inputs[c.parent]
        assert abs(x.norm().item() / pivot.norm().item() - 1) < 1e-5
        assert abs(_cos(x, pivot) - c.extra["cos"]) < 1e-5
    assert all(c.extra["cos"] == 0.9 for c in neighbours if c.round == 1)
    assert torch.equal(result.best_noise, toy.inputs[result.best_id])


def test_a_better_neighbour_becomes_the_pivot_and_the_pivot_is_never_rescored():
    toy = Recording(steps=4, max_batch=2)
    result = zero_order_search(toy.problem(), n=3, rounds=4, step_cos=0.95)
    assert set(toy.score_calls.values()) == {1} and sorted(toy.score_calls) == list(range(13))
    scores = {c.id: c.score for c in result.candidates}
    pivot = 0
    for r in range(1, 5):
        members = [c for c in result.candidates if c.round == r]
        assert {c.parent for c in members} == {pivot}
        challenger = max(members, key=lambda c: (c.score, -c.id))
        if challenger.score > scores[pivot]:
            pivot = challenger.id
    assert result.best_id == pivot and result.best_score == max(scores.values())
    assert result.baseline_score == scores[0]
    assert result.best_score >= result.baseline_score


def test_no_improvement_keeps_the_pivot_draws_fresh_ids_and_doubles_the_angle():
    toy = Recording(table=lambda i: 0.0, steps=3)
    result = zero_order_search(toy.problem(), n=2, rounds=5, step_cos=0.95)
    base = math.acos(0.95)
    expected = [0.95] + [math.cos(min(base * 2**k, math.pi / 2)) for k in range(1, 5)]
    cosines = [c.extra["cos"] for c in result.candidates[1::2]]
    assert cosines == pytest.approx(expected, abs=1e-12)
    assert expected[-1] == pytest.approx(0.0, abs=1e-12)  # the cap: a quarter turn
    assert [c.id for c in result.candidates] == list(range(11))
    assert all(c.parent == 0 for c in result.candidates[1:]) and result.best_id == 0
    rows = [toy.inputs[i] for i in range(1, 11)]
    assert all(not torch.equal(a, b) for k, a in enumerate(rows) for b in rows[k + 1:])
    for c in result.candidates[1:]:
        assert abs(_cos(toy.inputs[c.id], toy.inputs[0]) - c.extra["cos"]) < 1e-5
    assert sum("no improvement" in note for note in result.notes) == 5


def test_success_resets_the_angle_after_failed_rounds():
    # round 1 (ids 1, 2) fails, round 2 (ids 3, 4) finds id 4, round 3 steps from 4 at step_cos again
    toy = Recording(table=lambda i: {4: 2.0, 5: 3.0}.get(i, -1.0 if i else 0.0), steps=3)
    result = zero_order_search(toy.problem(), n=2, rounds=4, step_cos=0.8)
    by_id = {c.id: c for c in result.candidates}
    assert by_id[1].extra["cos"] == 0.8 and by_id[3].extra["cos"] == pytest.approx(math.cos(2 * math.acos(0.8)))
    assert by_id[5].parent == 4 and by_id[5].extra["cos"] == 0.8
    assert by_id[7].parent == 5 and by_id[7].extra["cos"] == 0.8
    assert result.best_id == 5 and result.best_score == 3.0 and result.baseline_score == 0.0
    assert torch.equal(result.best_noise, toy.inputs[5])


@pytest.mark.parametrize("steps,cost,n,rounds,budget,expected_candidates", [
    (6, None, 3, 4, None, 13), (6, heun_cost, 3, 4, None, 13), (6, None, 3, 4, 50, 8),
    (5, heun_cost, 4, 2, 31, 3), (4, None, 2, 3, 4, 1), (4, None, 2, 0, None, 1), (4, None, 5, 2, 10**6, 11),
])
def test_zero_order_spends_exactly_the_planned_nfes(steps, cost, n, rounds, budget, expected_candidates):
    toy = Toy(steps=steps, cost=cost, max_batch=2)
    unit = steps * (2 if cost else 1)
    planned = estimate_nfe("zero_order", toy.sigmas, cost=cost, budget_nfe=budget, n=n, rounds=rounds)
    result = zero_order_search(toy.problem(), n=n, rounds=rounds, budget_nfe=budget)
    assert result.nfe == result.nfe_planned == planned == expected_candidates * unit
    assert budget is None or result.nfe <= budget
    assert len(result.candidates) == expected_candidates


def test_zero_order_budget_error_and_bad_step():
    toy = Toy(steps=6, cost=heun_cost)
    with pytest.raises(BudgetError, match="costs 12 NFEs, so the minimum budget is 12"):
        zero_order_search(toy.problem(), budget_nfe=11)
    with pytest.raises(ValueError, match="step_cos"):
        zero_order_search(toy.problem(), step_cos=1.0)
    with pytest.raises(TypeError, match="step_size"):
        estimate_nfe("zero_order", toy.sigmas, step_size=0.5)


def test_zero_order_is_deterministic_and_batch_size_invariant():
    results = [run_search("zero_order", Toy(steps=5, max_batch=b).problem(), n=5, rounds=3, top_k=3)
               for b in (1, 3, 8, 8)]
    assert_bit_identical(results)
    assert results[2].to_dict() == results[3].to_dict()

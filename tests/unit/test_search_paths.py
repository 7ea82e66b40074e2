"""Search over Paths: schedule mapping, lineage, top-N selection, rounds, NFE accounting; and the dispatcher."""


import pytest
import torch

from noise_search.search import (
    ALGORITHMS,
    BudgetError,
    estimate_nfe,
    evolutionary_search,
    racing_search,
    random_search,
    run_search,
    search_over_paths,
    smc_search,
    zero_order_search,
)
from noise_search.tests.helpers.toys import Recording, Toy, assert_bit_identical, heun_cost


def _rounds(result):
    out = {}
    for c in result.candidates:
        out.setdefault(c.round, []).append(c)
    return out


def test_paths_schedule_lineage_and_top_n_selection():
    toy = Recording(steps=20, max_batch=3)
    result = search_over_paths(toy.problem(), n=2, m=3, sigma_start=0.75, delta_f=0.05, delta_b=0.1)
    # 20 steps: start at step 5, re-noise 1 step up, denoise 2 down: 4->6, 5->7, ..., 18->20 = 15 rounds
    rounds = _rounds(result)
    assert sorted(rounds) == list(range(16)) and result.config["rounds_run"] == 15
    assert [c.id for c in rounds[0]] == [0, 1] and all(c.score is None for c in rounds[0])
    assert [c.id for c in result.candidates] == list(range(2 + 15 * 6))
    kept = [c.id for c in rounds[0]]
    for r in range(1, 16):
        members = rounds[r]
        assert len(members) == 6
        assert [c.parent for c in members] == [p for p in kept for _ in range(3)]
        assert all(c.extra["segment"] == [r + 3, r + 5] for c in members)
        assert all(c.sigma == pytest.approx(float(toy.sigmas[r + 5])) for c in members)
        kept = [c.id for c in sorted(members, key=lambda c: (-c.score, c.id))[:2]]
    assert all(c.sigma == 0.0 for c in rounds[15])
    assert result.best_id == max(rounds[15], key=lambda c: (c.score, -c.id)).id
    assert result.best_score == max(c.score for c in rounds[15])
    assert {c.sigma for c in result.candidates if c.score is not None} != {0.0}  # intermediate x0 scores
    assert [(k, pytest.approx(float(toy.sigmas[r + 4])), pytest.approx(float(toy.sigmas[r + 3])))
            for k, r in zip([3, 3] * 15, sorted(list(range(1, 16)) * 2))] == toy.renoise_calls
    root = result.best_id
    parent = {c.id: c.parent for c in result.candidates}
    while parent[root] is not None:
        root = parent[root]
    assert torch.equal(result.best_noise, toy.noise(root))
    assert any("does not reproduce the best latent" in note for note in result.notes)
    assert result.baseline_score is None
    assert result.nfe == result.nfe_planned == 2 * 5 + 15 * 6 * 2


def test_ties_keep_the_lowest_ids():
    toy = Recording(table=lambda i: 0.0, steps=20)
    result = search_over_paths(toy.problem(), n=2, m=4, max_rounds=3)
    rounds = _rounds(result)
    assert [c.parent for c in rounds[2]] == [2] * 4 + [3] * 4  # 2 and 3 are both children of path 0
    assert [c.parent for c in rounds[3]] == [10] * 4 + [11] * 4
    assert [c.parent for c in rounds[4]] == [18, 19] and result.best_id == 26


def test_max_rounds_caps_branching_then_runs_kept_paths_to_the_end():
    toy = Recording(steps=20, cost=heun_cost, max_batch=4)
    result = search_over_paths(toy.problem(), n=3, m=2, max_rounds=2)
    rounds = _rounds(result)
    assert sorted(rounds) == [0, 1, 2, 3]
    top = [c.id for c in sorted(rounds[2], key=lambda c: (-c.score, c.id))[:3]]
    assert [c.parent for c in rounds[3]] == top and all(c.sigma == 0.0 for c in rounds[3])
    assert all(c.extra["segment"] == [7, 20] for c in rounds[3])
    assert result.best_id in [c.id for c in rounds[3]]
    expected = 2 * (3 * 5 + 3 * 2 * 2 * 2 + 3 * 13)
    assert result.nfe == result.nfe_planned == expected
    assert estimate_nfe("paths", toy.sigmas, cost=heun_cost, n=3, m=2, max_rounds=2) == expected

    toy = Recording(steps=20)
    result = search_over_paths(toy.problem(), n=2, m=3, max_rounds=0)
    assert [c.round for c in result.candidates] == [0, 0, 1, 1] and not toy.renoise_calls
    assert result.nfe == 2 * 20 and [c.parent for c in result.candidates[2:]] == [0, 1]


def test_paths_progress_and_curve_start_with_the_first_final_score():
    toy = Recording(steps=20, max_batch=4)
    result = search_over_paths(toy.problem(), n=2, m=2)
    assert toy.progress_log[0] == (10, result.nfe_planned, None, None)
    final_nfe = [c.nfe for c in result.candidates if c.sigma == 0.0]
    assert result.curve[0][0] == min(final_nfe) and result.curve[-1] == (result.nfe, result.best_score)


@pytest.mark.parametrize("steps,cost,n,m,kw,budget", [
    (20, None, 2, 4, {}, None), (20, heun_cost, 2, 4, {}, None), (30, None, 3, 3, {"delta_b": 0.2}, None),
    (20, None, 4, 4, {}, 300), (20, heun_cost, 4, 4, {"max_rounds": 3}, 101), (20, None, 3, 5, {}, 61),
    (17, None, 2, 2, {"sigma_start": 0.5, "delta_f": 0.1, "delta_b": 0.3}, None),
])
def test_paths_spends_exactly_the_planned_nfes_within_budget(steps, cost, n, m, kw, budget):
    toy = Recording(steps=steps, cost=cost, max_batch=3)
    planned = estimate_nfe("paths", toy.sigmas, cost=cost, budget_nfe=budget, n=n, m=m, **kw)
    result = search_over_paths(toy.problem(), n=n, m=m, budget_nfe=budget, **kw)
    assert result.nfe == result.nfe_planned == planned
    per_step = 2 if cost else 1
    spent = 0
    for ids, s_from, s_to in toy.integrate_calls:
        lo = int((toy.sigmas == s_from).nonzero()[0])
        hi = int((toy.sigmas == s_to).nonzero()[0])
        spent += len(ids) * (hi - lo) * per_step
    assert spent == result.nfe
    if budget is not None:
        assert result.nfe <= budget
        shrunk = (result.config["n_run"], result.config["m_run"]) != (n, m)
        assert shrunk == any("shrank" in note for note in result.notes)
        assert shrunk  # these budgets are all below the full plan
        full = estimate_nfe("paths", toy.sigmas, cost=cost, n=n, m=m, **kw)
        assert full > budget


def test_paths_budget_shrinks_n_before_m_and_errors_below_one_path():
    toy = Recording(steps=20)
    result = search_over_paths(toy.problem(), n=4, m=4, budget_nfe=300)  # 4x4: 20 + 15*16*2 = 500
    assert (result.config["n_run"], result.config["m_run"]) == (2, 4)  # 2x4: 10 + 15*8*2 = 250
    result = search_over_paths(toy.problem(), n=4, m=4, budget_nfe=100)
    assert (result.config["n_run"], result.config["m_run"]) == (1, 3)  # 1x3: 5 + 15*3*2 = 95
    toy = Recording(steps=20)
    with pytest.raises(BudgetError, match=r"\(N=1, M=1\) costs 35 NFEs, so the minimum budget is 35"):
        search_over_paths(toy.problem(), n=4, m=4, budget_nfe=34)
    assert not toy.integrate_calls


def test_paths_rejects_schedules_that_cannot_advance():
    toy = Toy(steps=20)
    with pytest.raises(ValueError, match="delta_b > delta_f"):
        search_over_paths(toy.problem(), delta_f=0.1, delta_b=0.1)
    with pytest.raises(ValueError, match="delta_b > delta_f"):
        estimate_nfe("paths", Toy(steps=4).sigmas)  # 4 steps: f = 1 step, b = 0 steps
    with pytest.raises(ValueError, match="sigma_start"):
        search_over_paths(toy.problem(), sigma_start=1.0)
    with pytest.raises(ValueError, match="sigma_start"):
        search_over_paths(toy.problem(), sigma_start=0.01)
    assert not toy.integrate_calls


def test_paths_is_deterministic_and_batch_size_invariant():
    results = [search_over_paths(Toy(steps=20, max_batch=b).problem(), n=3, m=3, top_k=4) for b in (1, 3, 8, 8)]
    assert_bit_identical(results)
    assert results[2].to_dict() == results[3].to_dict()


def test_dispatcher_runs_each_algorithm_and_names_the_valid_ones():
    assert dict(list(ALGORITHMS.items())[:4]) == {"random": random_search, "zero_order": zero_order_search,
                                                  "paths": search_over_paths, "smc": smc_search}
    assert ALGORITHMS["evolution"] is evolutionary_search and ALGORITHMS["racing"] is racing_search
    for name, kw in [("random", {"n": 3}), ("zero_order", {"n": 2, "rounds": 2}), ("paths", {"n": 2, "m": 2}),
                     ("smc", {"n": 3}), ("evolution", {"n": 3, "generations": 2}), ("racing", {"n": 5, "eta": 2})]:
        toy = Toy(steps=20, max_batch=4)
        result = run_search(name, toy.problem(), budget_nfe=1000, **kw)
        assert result.algorithm == name and result.nfe == estimate_nfe(name, toy.sigmas, budget_nfe=1000, **kw)
        direct = ALGORITHMS[name](Toy(steps=20, max_batch=4).problem(), budget_nfe=1000, **kw)
        assert torch.equal(result.best, direct.best)
    valid = "valid: " + ", ".join(sorted(ALGORITHMS))
    assert valid == "valid: evolution, paths, racing, random, smc, trust_region, zero_order"
    with pytest.raises(ValueError, match=valid):
        run_search("beam", Toy().problem())
    with pytest.raises(ValueError, match=valid):
        estimate_nfe("beam", Toy().sigmas)

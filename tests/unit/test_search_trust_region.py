"""Trust-region search: region geometry, the grow/shrink/restart rules, NFE accounting, ensembles, invariance."""

import math

import pytest
import torch

from noise_search.search import (
    ALGORITHMS,
    BudgetError,
    SettingError,
    estimate_nfe,
    random_search,
    run_search,
    trust_region_search,
)
from noise_search.search.noise import renoise_ve, seeded_noise
from noise_search.search.types import SearchProblem
from noise_search.tests.helpers.tables import BATCHES, aggregate_table, table_search, top_ids
from noise_search.tests.helpers.toys import SHAPE, Toy, assert_bit_identical, heun_cost

A0 = math.acos(0.8)


class Identity:
    """A 'sampler' that returns its initial noise, so scores are functions of the noise; records every input."""

    def __init__(self, score_of, max_batch=8, seed=5):
        self.score_of, self.max_batch = score_of, max_batch
        self.noise = seeded_noise(seed, SHAPE)
        self.inputs = {}
        self.calls = []  # per integrate call: (id, from_noise, plain) of each row

    def integrate(self, x, sigmas, batch):
        self.calls.append([(c.id, c.from_noise, c.plain) for c in batch])
        for c, row in zip(batch, x):
            self.inputs[c.id] = row.clone()
        return x, x

    def score(self, x0, sigma, batch):
        return torch.tensor([float(self.score_of(c.id, row)) for c, row in zip(batch, x0)])

    def problem(self) -> SearchProblem:
        return SearchProblem(integrate=self.integrate, score=self.score, sigmas=torch.linspace(1, 0, 5),
                             noise=self.noise, renoise=renoise_ve, max_batch=self.max_batch)


def table(values, default=0.0):
    return lambda i, row: values.get(i, default)


def _cos(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def test_success_grows_failure_shrinks_and_a_collapsed_region_restarts_from_fresh_noise():
    # centres 1 and 2; round 1 (3..6): region 0 finds 5, region 1 fails; round 2 (7..10): both fail, region 1
    # falls below arccos(0.98) and restarts; round 3 (11..14): region 1 draws fresh noises 12 and 14, 14 becomes
    # its centre though worse than its old one; round 4 (15..18): 18 beats 14 and wins
    toy = Identity(table({0: 1.0, 1: 3.0, 2: 2.0, 5: 4.0, 12: -1.0, 14: 0.5, 18: 5.0}), max_batch=3)
    result = trust_region_search(toy.problem(), n=3, regions=2, per_region=2, rounds=4, step_cos=0.8, grow=2.0,
                                 shrink=0.5, patience=1, min_cos=0.98)
    by_id = {c.id: c for c in result.candidates}
    assert [c.id for c in result.candidates] == list(range(19))
    assert [by_id[i].extra["region"] for i in range(3, 19)] == [0, 1] * 8
    parents = {i: by_id[i].parent for i in range(3, 19)}
    assert parents == {3: 1, 5: 1, 4: 2, 6: 2, 7: 5, 9: 5, 8: 2, 10: 2, 11: 5, 13: 5, 12: None, 14: None,
                       15: 5, 17: 5, 16: 14, 18: 14}
    cos = {i: by_id[i].extra.get("cos") for i in range(3, 19)}
    assert cos[3] == cos[4] == 0.8 and cos[11] == 0.8 and cos[16] == 0.8  # the start angle, exactly
    assert cos[7] == pytest.approx(math.cos(2 * A0)) and cos[8] == pytest.approx(math.cos(A0 / 2))
    assert cos[15] == pytest.approx(math.cos(A0 / 2)) and cos[12] is None
    assert {by_id[i].kind for i in (12, 14)} == {"restart"} and by_id[16].kind == "region"
    for i in (0, 1, 2, 12, 14):
        assert torch.equal(toy.inputs[i], toy.noise(i)) and by_id[i].root == i and by_id[i].from_noise
    for i, c in cos.items():
        if c is not None:
            centre = toy.inputs[parents[i]]
            assert abs(toy.inputs[i].norm().item() / centre.norm().item() - 1) < 1e-5
            assert abs(_cos(toy.inputs[i], centre) - c) < 1e-5
    assert [by_id[i].round for i in (0, 3, 7, 11, 15)] == [0, 1, 2, 3, 4]
    assert result.best_id == 18 and result.best_score == 5.0 and result.baseline_score == 1.0
    assert torch.equal(result.best_noise, toy.inputs[18])
    assert result.notes[0] == "regions centred on 1, 2 (the best of the initial batch)"
    assert "restarts from fresh noise" in result.notes[2] and "region 1 restarts at 14" in result.notes[3]
    assert result.config["rounds_run"] == 4 and result.config["regions_run"] == 2


def test_a_round_mixing_restarts_and_region_steps_reaches_integrate_one_kind_at_a_time():
    """SearchProblem's promise, which ComfyUI's runner relies on (a plain seed runs as the stock sampler would):
    round 3 above holds region 0's steps and region 1's fresh noises, chunked three rows at a time."""
    toy = Identity(table({0: 1.0, 1: 3.0, 2: 2.0, 5: 4.0, 12: -1.0, 14: 0.5, 18: 5.0}), max_batch=3)
    result = trust_region_search(toy.problem(), n=3, regions=2, per_region=2, rounds=4, step_cos=0.8, grow=2.0,
                                 shrink=0.5, patience=1, min_cos=0.98)
    assert all(len({(fresh, plain) for _, fresh, plain in call}) == 1 for call in toy.calls), toy.calls
    assert sorted(i for call in toy.calls for i, *_ in call) == list(range(19))  # every row once
    assert [[i for i, *_ in call] for call in toy.calls][5:8] == [[11, 13], [12], [14]]  # chunk 11..13 split by kind
    assert result.best_id == 18


def test_patience_counts_failed_rounds_in_a_row_and_a_success_resets_it():
    toy = Identity(table({3: 1.0}))
    result = trust_region_search(toy.problem(), n=1, regions=1, per_region=1, rounds=7, step_cos=0.8, patience=2,
                                 min_cos=0.999)
    cosines = [c.extra["cos"] for c in result.candidates[1:]]
    half = math.cos(A0 / 2)
    assert cosines == pytest.approx([0.8, 0.8, half, 0.8, 0.8, half, half])
    assert [c.parent for c in result.candidates[1:]] == [0, 0, 0, 3, 3, 3, 3]


def test_the_angle_grows_to_a_quarter_turn_at_most():
    toy = Identity(lambda i, row: float(i))
    result = trust_region_search(toy.problem(), n=1, regions=1, per_region=1, rounds=4, step_cos=0.3, grow=3.0)
    cosines = [c.extra["cos"] for c in result.candidates[1:]]
    assert cosines[0] == 0.3 and cosines[1:] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    assert [c.parent for c in result.candidates[1:]] == [0, 1, 2, 3] and result.best_id == 4


def test_regions_climb_to_an_optimum_random_search_cannot_reach():
    target = seeded_noise(10**9, SHAPE)(0)
    toy = Identity(lambda i, row: _cos(row, target))
    result = trust_region_search(toy.problem(), n=8, regions=2, per_region=4, rounds=30, step_cos=0.9)
    spent = result.nfe // 4
    random_best = random_search(Identity(lambda i, row: _cos(row, target)).problem(), n=spent).best_score
    initial_best = max(c.score for c in result.candidates if c.kind == "initial")
    assert initial_best < 0.7 and random_best < 0.7
    assert result.best_score > 0.9
    centres = [c for c in result.candidates if c.id == result.best_id or c.id in
               {d.parent for d in result.candidates if d.parent is not None}]
    assert len(centres) > 10  # the winner is the end of a long chain of moves


@pytest.mark.parametrize("steps,cost,n,regions,per_region,rounds,budget,expected", [
    (6, None, 4, 2, 2, 3, None, 16), (6, heun_cost, 4, 2, 2, 3, None, 16), (6, None, 4, 2, 2, 3, 60, 10),
    (5, heun_cost, 4, 3, 1, 2, 31, 3), (4, None, 3, 2, 2, 0, None, 3), (4, None, 2, 5, 2, 2, 10**6, 10),
    (4, None, 8, 2, 2, 3, 9, 2), (3, None, 5, 3, 2, 3, 49, 16),
])
def test_trust_region_spends_exactly_the_planned_nfes(steps, cost, n, regions, per_region, rounds, budget,
                                                        expected):
    toy = Toy(steps=steps, cost=cost, max_batch=3)
    unit = steps * (2 if cost else 1)
    config = dict(n=n, regions=regions, per_region=per_region, rounds=rounds)
    planned = estimate_nfe("trust_region", toy.sigmas, cost=cost, budget_nfe=budget, **config)
    result = trust_region_search(toy.problem(), budget_nfe=budget, **config)
    assert result.nfe == result.nfe_planned == planned == expected * unit
    assert budget is None or result.nfe <= budget
    assert len(result.candidates) == expected


def test_a_budget_cut_spreads_the_partial_round_over_the_regions_and_says_so():
    result = trust_region_search(Toy(steps=3).problem(), n=5, regions=3, per_region=2, rounds=3, budget_nfe=49)
    last = [c for c in result.candidates if c.round == 2]
    assert [c.extra["region"] for c in last] == [0, 1, 2, 0, 1] and result.config["rounds_run"] == 2
    assert any("budget_nfe=49 pays for 5 of the 5 initial candidates and 11 of the 18 region candidates (3 NFEs "
               "each): raise budget_nfe to 69" in note for note in result.notes), result.notes


def test_more_regions_than_initial_candidates_run_as_many_as_there_are_and_say_so():
    result = trust_region_search(Toy(steps=3).problem(), n=2, regions=5, per_region=1, rounds=1)
    assert result.config["regions_run"] == 2 and len(result.candidates) == 4
    assert any("regions=5 is more than the 2 initial candidate(s): 2 region(s) run" in note for note in result.notes)


def test_budget_error_and_bad_settings():
    toy = Toy(steps=6, cost=heun_cost)
    with pytest.raises(BudgetError, match="costs 12 NFEs, so the minimum budget is 12"):
        trust_region_search(toy.problem(), budget_nfe=11)
    bad = [("regions", 0), ("per_region", 0), ("n", 0), ("rounds", -1), ("patience", 0), ("grow", 0.5),
           ("shrink", 1.0), ("shrink", 0.0), ("min_cos", 1.0), ("step_cos", 1.0), ("step_cos", -0.1)]
    for param, value in bad:
        with pytest.raises(SettingError) as caught:
            estimate_nfe("trust_region", toy.sigmas, **{param: value})
        assert caught.value.param == param and param in str(caught.value) and "{" not in str(caught.value)
        with pytest.raises(SettingError):
            trust_region_search(toy.problem(), **{param: value})
    with pytest.raises(TypeError, match="step_size"):
        estimate_nfe("trust_region", toy.sigmas, step_size=0.5)


def test_trust_region_is_deterministic_and_batch_size_invariant():
    results = [run_search("trust_region", Toy(steps=5, max_batch=b).problem(), n=5, regions=2, per_region=3,
                          rounds=4, min_cos=0.95, top_k=3) for b in (1, 3, 8, 8)]
    assert_bit_identical(results)
    assert results[2].to_dict() == results[3].to_dict()


def test_dispatch_registers_trust_region_after_the_paper_algorithms():
    assert list(ALGORITHMS)[:3] == ["random", "zero_order", "paths"] and "trust_region" in ALGORITHMS
    toy = Toy(steps=4, max_batch=4)
    result = run_search("trust_region", toy.problem(), budget_nfe=100, n=3)
    assert result.algorithm == "trust_region" and result.nfe == estimate_nfe("trust_region", toy.sigmas,
                                                                             budget_nfe=100, n=3)
    assert torch.equal(result.best, trust_region_search(Toy(steps=4, max_batch=4).problem(), budget_nfe=100, n=3).best)


# --- ensembles: every decision over the scores of all finals once the round is complete ------------------------

def reference(tables, n, regions, per_region, rounds, step_cos, grow, shrink, patience, min_cos, weights, mode):
    """(parent by id, score by id, winner): the region rules replayed on whole sets, chunking nowhere in sight."""
    base, floor = math.acos(step_cos), math.acos(min_cos)
    finals = list(range(n))
    scores = aggregate_table(tables, finals, weights, mode)
    centres = top_ids(scores, finals, regions)
    angle, fails, restart = [base] * regions, [0] * regions, [False] * regions
    parents = {i: None for i in finals}
    for _ in range(rounds):
        ids = list(range(len(finals), len(finals) + regions * per_region))
        own = [ids[k::regions] for k in range(regions)]
        parents.update({i: None if restart[k] else centres[k] for k in range(regions) for i in own[k]})
        finals += ids
        scores = aggregate_table(tables, finals, weights, mode)
        for k in range(regions):
            best = top_ids(scores, own[k], 1)[0]
            if restart[k]:
                centres[k], angle[k], fails[k], restart[k] = best, base, 0, False
            elif scores[best] > scores[centres[k]]:
                centres[k], angle[k], fails[k] = best, min(grow * angle[k], math.pi / 2), 0
            else:
                fails[k] += 1
                if fails[k] >= patience:
                    angle[k], fails[k] = shrink * angle[k], 0
                    restart[k] = angle[k] < floor
    return parents, scores, top_ids(scores, finals, 1)[0]


@pytest.mark.parametrize("mode,weights,seed", [("rank", None, 0), ("rank", [1.0, 3.0], 1), ("zscore", [2.0, 1.0], 2)])
def test_every_region_decision_aggregates_all_finals_at_every_batch_size(mode, weights, seed):
    g = torch.Generator().manual_seed(seed)

    def draw():
        return (torch.randint(0, 6, (64,), generator=g) if mode == "rank" else torch.randn(64, generator=g)).tolist()

    tables = {"A": draw(), "B": draw()}
    config = dict(n=5, regions=2, per_region=3, rounds=6, step_cos=0.8, grow=2.0, shrink=0.5, patience=1,
                  min_cos=0.9)
    results = [table_search("trust_region", tables, b, weights=weights, mode=mode, top_k=3, **config)
               for b in BATCHES]
    assert_bit_identical(results)
    r = results[0]
    parents, scores, winner = reference(tables, weights=weights, mode=mode, **config)
    assert {c.id: c.parent for c in r.candidates} == parents
    assert {c.id: c.score for c in r.candidates} == scores
    assert r.best_id == winner and r.best_score == scores[winner]
    assert r.topk_ids == top_ids(scores, list(scores), 3)
    assert any(c.kind == "restart" for c in r.candidates)  # the replay covers restarts too

"""Seed racing: the plan (rungs, sizes, exact NFEs, budgets), the bracket, exactness against plain runs of each seed,
batch-size invariance, ensembles over whole rungs, early exit and the rung/final agreement."""

import pytest
import torch

from noise_search.search import BudgetError, Candidate, SettingError, estimate_nfe, racing_search, random_search
from noise_search.search.budget import plan_racing, racing_schedule
from noise_search.search.stats import spearman
from noise_search.tests.helpers.tables import BATCHES, aggregate_table, table_search, top_ids
from noise_search.tests.helpers.toys import Toy, assert_bit_identical, heun_cost, karras


def test_rungs_map_trajectory_times_to_steps_half_up():
    assert racing_schedule(20, (0.75, 0.5)) == [5, 10]
    assert racing_schedule(20, "0.5, 0.75") == [5, 10]  # any order, comma-separated
    assert racing_schedule(10, [0.85]) == [2]  # 1.5 rounds half up


@pytest.mark.parametrize("rungs,message", [
    ("", "is empty"), ("0.5, x", "numbers separated by commas"), ((1.0,), "strictly between"),
    ((0.0,), "strictly between"), ((0.99,), r"step\(s\) \[0\] of 10"), ((0.01,), r"step\(s\) \[10\] of 10"),
    ((0.51, 0.49), "fall on the same steps"),
])
def test_bad_rungs_are_refused_with_the_reason(rungs, message):
    with pytest.raises(SettingError, match=message) as e:
        racing_schedule(10, rungs)
    assert e.value.param == "rungs"


def test_eta_below_two_is_refused():
    with pytest.raises(SettingError, match="eta"):
        plan_racing(lambda s: len(s) - 1, karras(10), n=4, eta=1, rungs=(0.5,))


def test_plan_sizes_segments_and_cost_are_successive_halving():
    plan = plan_racing(heun_cost, karras(20), n=10, eta=2, rungs=(0.75, 0.5))
    assert plan.rungs == [5, 10] and plan.segments == [(0, 5), (5, 10), (10, 20)]
    assert plan.sizes == [10, 5, 3]  # ceil(k / eta), at least one
    assert plan.costs == [10, 10, 20]
    assert plan.total == 10 * 10 + 5 * 10 + 3 * 20


def test_a_budget_picks_the_largest_n_that_fits_and_refuses_less_than_one_seed():
    nfe = lambda s: len(s) - 1  # noqa: E731
    plan = plan_racing(nfe, karras(20), n=1000, eta=4, rungs=(0.75,), budget_nfe=200)
    assert plan.total <= 200 < plan_racing(nfe, karras(20), n=plan.n + 1, eta=4, rungs=(0.75,)).total
    assert plan_racing(nfe, karras(20), n=3, eta=4, rungs=(0.75,), budget_nfe=10_000).n == 3
    with pytest.raises(BudgetError, match="minimum budget is 20"):
        plan_racing(nfe, karras(20), n=4, eta=2, rungs=(0.75,), budget_nfe=19)


def test_prefix_costs_follow_one_uninterrupted_run():
    """A sampler whose last step is cheaper (Heun's Euler step to sigma 0): a segment costs what the whole run
    spends between its ends, not what a separate run over the slice would."""
    def cost(s):
        return 2 * (len(s) - 1) - (1 if float(s[-1]) == 0 else 0)

    plan = plan_racing(cost, karras(10), n=4, eta=2, rungs=(0.5,))
    assert plan.costs == [10, 9] and sum(plan.costs) == cost(karras(10))


@pytest.mark.parametrize("cost", [None, heun_cost])
@pytest.mark.parametrize("budget", [None, 150])
def test_racing_spends_exactly_the_planned_nfes(cost, budget):
    toy = Toy(steps=12, cost=cost, max_batch=3)
    config = dict(n=9, eta=3, rungs=(0.75, 0.5), budget_nfe=budget)
    result = racing_search(toy.problem(), **config)
    assert result.nfe == result.nfe_planned == estimate_nfe("racing", toy.sigmas, cost=cost, **config)
    assert budget is None or result.nfe <= budget
    per_row = sum(len(ids) * ((2 if cost else 1) * (toy.sigmas.tolist().index(hi) - toy.sigmas.tolist().index(lo)))
                  for ids, lo, hi in toy.integrate_calls)
    assert per_row == result.nfe


def _rung_scores(toy, ids, hi):
    """Score of each seed's x0 prediction after integrating it alone up to step `hi`."""
    out = {}
    for i in ids:
        c = Candidate(id=i, parent=None, round=0, kind="initial")
        _, x0 = toy.integrate(toy.noise(i).unsqueeze(0), toy.sigmas[: hi + 1], [c])
        out[i] = float(toy.score(x0, 0.0, [c])[0][0])
    return out


def test_the_bracket_keeps_the_best_of_each_rung_and_the_winner_is_the_best_finisher():
    toy = Toy(steps=12, max_batch=4, target=0.8)
    result = racing_search(toy.problem(), n=8, eta=2, rungs=(0.75, 0.5), top_k=2)
    by_id = {c.id: c for c in result.candidates}
    assert sorted(by_id) == list(range(8)) and len(result.candidates) == 8  # each seed logged once
    reference = Toy(steps=12, target=0.8)
    first = _rung_scores(reference, range(8), 3)
    survivors = top_ids(first, list(range(8)), 4)
    second = _rung_scores(reference, survivors, 6)
    finishers = top_ids(second, survivors, 2)
    assert sorted(c.id for c in result.candidates if c.final) == sorted(finishers)
    for i in range(8):
        rungs = by_id[i].extra["rungs"]
        assert rungs[0]["step"] == 3 and rungs[0]["score"] == pytest.approx(first[i], rel=1e-6)
        dropped = by_id[i].extra.get("dropped_at")
        assert dropped == (None if i in finishers else 1 if i not in survivors else 2)
        assert len(rungs) == (dropped or 2)
    finals = {i: by_id[i].score for i in finishers}
    assert result.topk_ids == top_ids(finals, finishers, 2)
    assert all(c.plain and c.kind == "initial" for c in result.candidates)


def test_every_finisher_equals_the_plain_sample_of_its_seed_bit_for_bit():
    toy = Toy(steps=10, max_batch=1)
    result = racing_search(toy.problem(), n=6, eta=2, rungs=(0.6,), top_k=3)
    plain = random_search(Toy(steps=10, max_batch=1).problem(), n=6, top_k=6)
    plain_states = dict(zip(plain.topk_ids, plain.topk))
    for cid, state in zip(result.topk_ids, result.topk):
        assert torch.equal(state, plain_states[cid])
    assert torch.equal(result.best_noise, toy.noise(result.best_id))


def test_results_are_identical_at_batch_sizes_1_3_and_n():
    results = [racing_search(Toy(steps=12, max_batch=b, target=0.9).problem(), n=11, eta=2, rungs=(0.8, 0.5),
                             top_k=2) for b in (1, 3, 11)]
    assert_bit_identical(results)
    assert [[c.extra for c in r.candidates] for r in results[1:]] == [[c.extra for c in results[0].candidates]] * 2


@pytest.mark.parametrize("max_batch", BATCHES)
def test_an_ensemble_ranks_each_rung_over_the_whole_rung(max_batch):
    tables = {"a": [5, 1, 4, 2, 8, 7, 3, 6], "b": [1, 8, 2, 7, 3, 6, 5, 4]}
    result = table_search("racing", tables, max_batch, n=8, eta=2, rungs=(0.5,), top_k=1)
    rung = aggregate_table(tables, list(range(8)), None, "rank")
    survivors = top_ids(rung, list(range(8)), 4)
    assert sorted(c.id for c in result.candidates if c.final) == sorted(survivors)
    finals = aggregate_table(tables, survivors, None, "rank")
    assert result.best_id == top_ids(finals, survivors, 1)[0]
    assert {c.id: c.extra["rungs"][0]["score"] for c in result.candidates} == pytest.approx(rung)


def test_early_exit_stops_at_the_first_finisher_in_id_order_at_any_batch_size():
    def run(b):
        toy = Toy(steps=10, max_batch=b, target=0.5)
        return racing_search(toy.problem(), n=8, eta=2, rungs=(0.5,), stop_score=-1e9)

    results = [run(b) for b in (1, 2, 4)]
    for r in results[1:]:  # only the NFEs of batch mates computed after the stopping one depend on the batch size
        assert torch.equal(r.best, results[0].best) and r.topk_ids == results[0].topk_ids
        assert [(c.id, c.score, c.final) for c in r.candidates] == \
            [(c.id, c.score, c.final) for c in results[0].candidates]
        assert [n for n in r.notes if "were left out" not in n] == results[0].notes
    assert results[0].nfe < estimate_nfe("racing", Toy(steps=10).sigmas, n=8, eta=2, rungs=(0.5,))
    finishers = sorted(c.id for c in results[0].candidates if c.extra.get("dropped_at") is None)
    assert results[0].best_id == finishers[0]
    assert any(n.startswith("stopped early") for n in results[0].notes)


def test_the_report_gives_each_rungs_rank_agreement_with_the_finals():
    result = racing_search(Toy(steps=12, max_batch=4, target=0.8).problem(), n=12, eta=2, rungs=(0.75,))
    finished = [c for c in result.candidates if c.final]
    assert len(finished) == 6
    expected = spearman([c.extra["rungs"][0]["score"] for c in finished], [c.score for c in finished])
    assert result.config["rung_rho"] == [expected] and expected is not None
    assert any(f"Spearman rho between rung and final scores over the 6 finishers: {expected:.3f}" in n
               for n in result.notes)


def test_rung_agreement_is_none_without_three_finishers_or_with_a_constant_side():
    from noise_search.search.racing import rung_agreement

    def cand(i, rung, final):
        c = Candidate(id=i, parent=None, round=0, kind="initial", final=True, score=final)
        c.extra["rungs"] = [{"score": rung}]
        return c

    assert rung_agreement([cand(0, 1.0, 2.0), cand(1, 2.0, 1.0)], 1) == [None]
    assert rung_agreement([cand(i, 1.0, float(i)) for i in range(4)], 1) == [None]
    assert rung_agreement([cand(i, float(i), float(i)) for i in range(4)], 1) == [pytest.approx(1.0)]


def test_the_chart_draws_the_bracket_column_by_column():
    from noise_search.report import SearchReport
    from noise_search.report.render import _bracket_columns, render_report

    result = racing_search(Toy(steps=12, max_batch=4, target=0.8).problem(), n=8, eta=2, rungs=(0.75, 0.5))
    columns = _bracket_columns(result)
    by_id = {c.id: c for c in result.candidates}
    assert [len(col) for col in columns] == [8, 4, 2]
    assert columns[0] == sorted(range(8), key=lambda i: (-by_id[i].extra["rungs"][0]["score"], i))
    assert set(columns[2]) <= set(columns[1]) <= set(columns[0]) and columns[2][0] == result.best_id
    report = SearchReport(results=[result], verifier="toy", images=[{}], latents=[{}], thumbs=[{}])
    racing, plain = render_report(report), render_report(SearchReport(
        results=[random_search(Toy(steps=12).problem(), n=2)], verifier="toy", images=[{}], latents=[{}],
        thumbs=[{}]))
    assert racing.shape[1] > plain.shape[1]  # the bracket panel is drawn

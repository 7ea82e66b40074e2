"""Evolutionary Search: Gaussian mutation, elitism, tournaments, NFE accounting, invariance, ensembles, and that it
climbs where best-of-N cannot."""

import math

import pytest
import torch

from noise_search.search import (
    BudgetError,
    SearchProblem,
    SettingError,
    estimate_nfe,
    evolutionary_search,
    random_search,
    run_search,
)
from noise_search.search.evolution import mutate, tournaments
from noise_search.search.noise import renoise_ve, seeded_noise
from noise_search.search.types import Candidate
from noise_search.tests.helpers.tables import table_search
from noise_search.tests.helpers.toys import SHAPE, Recording, Toy, assert_bit_identical, heun_cost
from noise_search.verifiers.ensemble import combine


def replay(result, elite, scores_before=None):
    """The population before each generation g, rebuilt from the log: the `elite` best of the last one by
    scores_before(g) (default: the candidates' own scores) plus its offspring."""
    own = {c.id: c.score for c in result.candidates}
    population = [c.id for c in result.candidates if c.round == 0]
    populations = {}
    for g in sorted({c.round for c in result.candidates} - {0}):
        populations[g] = population
        scores = scores_before(g) if scores_before else own
        elites = sorted(population, key=lambda i: (-scores[i], i))[:elite]
        population = elites + [c.id for c in result.candidates if c.round == g]
    return populations


def test_mutation_keeps_the_noise_gaussian_and_mixes_exactly():
    g = torch.Generator().manual_seed(0)
    parent, eps = torch.randn(200_000, generator=g) * 3, torch.randn(200_000, generator=g) * 3
    for r in (0.1, 0.5, 0.9):
        child = mutate(parent, eps, r)
        assert child.std().item() == pytest.approx(3.0, rel=0.01) and abs(child.mean().item()) < 0.03
        corr = torch.corrcoef(torch.stack([child, parent]))[0, 1].item()
        assert corr == pytest.approx(math.sqrt(1 - r * r), abs=0.01)
    assert torch.equal(mutate(parent, eps, 1.0), eps)
    assert mutate(parent.half(), eps.half(), 0.5).dtype == torch.float16


def test_offspring_mix_their_tournament_winner_with_their_own_noise():
    toy = Recording(steps=4, max_batch=3)
    result = evolutionary_search(toy.problem(), n=5, generations=3, elite=2, tournament=3, mutation=0.4)
    by_id = {c.id: c for c in result.candidates}
    assert [c.id for c in result.candidates] == list(range(5 + 3 * 3))
    assert set(toy.score_calls.values()) == {1}  # elites are never sampled or scored again
    populations = replay(result, 2)
    for c in result.candidates:
        assert c.root == c.id and c.from_noise and c.final
        if c.round == 0:
            assert c.kind == "initial" and c.parent is None and torch.equal(toy.inputs[c.id], toy.noise(c.id))
            continue
        assert c.kind == "offspring" and c.extra["mutation"] == 0.4
        members = c.extra["tournament"]
        assert len(set(members)) == 3 and set(members) <= set(populations[c.round])
        assert c.parent == max(members, key=lambda i: (by_id[i].score, -i))
        expected = math.sqrt(1 - 0.4 ** 2) * toy.inputs[c.parent].double() + 0.4 * toy.noise(c.id).double()
        assert torch.equal(toy.inputs[c.id], expected.float())
    assert torch.equal(result.best_noise, toy.inputs[result.best_id])
    assert result.baseline_score == by_id[0].score and result.best_score == max(c.score for c in result.candidates)
    assert [note.split(":")[0] for note in result.notes[:3]] == ["generation 1", "generation 2", "generation 3"]


def test_the_elite_survive_and_a_worse_generation_cannot_lose_the_best():
    # generation 0 holds the best score (id 2); every offspring is worse, so id 2 stays elite and parents the rest
    toy = Recording(table=lambda i: {2: 10.0, 0: 5.0}.get(i, -float(i)), steps=3)
    result = evolutionary_search(toy.problem(), n=4, generations=4, elite=1, tournament=4, mutation=0.3)
    assert all(c.parent == 2 for c in result.candidates if c.round > 0)  # a full tournament is the population's best
    assert all(note.startswith(f"generation {g}: elite [2] kept") for g, note in enumerate(result.notes[:4], 1))
    assert result.best_id == 2 and result.best_score == 10.0 and result.baseline_score == 5.0


def test_mutation_one_samples_exactly_the_noises_random_search_samples():
    evo = evolutionary_search(Toy(steps=4).problem(), n=3, generations=4, elite=1, tournament=2, mutation=1.0)
    rnd = random_search(Toy(steps=4).problem(), n=11)
    assert [c.score for c in evo.candidates] == [c.score for c in rnd.candidates]
    assert evo.best_id == rnd.best_id and torch.equal(evo.best, rnd.best)


def test_tournaments_are_seeded_by_generation_prefix_stable_and_leave_the_global_rng_alone():
    population = [Candidate(id=i, parent=None, round=0, kind="initial", score=float(i % 4)) for i in (7, 3, 9, 1, 4)]
    state = torch.random.get_rng_state()
    full = tournaments(population, 6, 2, generation=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert tournaments(population, 4, 2, generation=3) == full[:4]
    assert tournaments(list(reversed(population)), 6, 2, generation=3) == full  # positions are taken by id
    assert [members for _, members in tournaments(population, 6, 2, generation=4)] != [m for _, m in full]
    for winner, members in full:
        assert winner.id == max(members, key=lambda i: (i % 4, -i))


@pytest.mark.parametrize("steps,cost,config,budget,sizes", [
    (5, None, dict(n=4, generations=3, elite=1), None, [4, 3, 3, 3]),
    (5, heun_cost, dict(n=4, generations=3, elite=2), None, [4, 2, 2, 2]),
    (5, None, dict(n=4, generations=3, elite=1), 55, [4, 3, 3, 1]),  # the last generation partial
    (5, heun_cost, dict(n=4, generations=3, elite=1), 79, [4, 3]),
    (5, None, dict(n=6, generations=3, elite=1), 20, [4]),  # not even generation 0: the first 4 noises
    (4, None, dict(n=3, generations=0, elite=0, tournament=1), None, [3]),
    (4, None, dict(n=1, generations=5, elite=0, tournament=1), 10**6, [1, 1, 1, 1, 1, 1]),
])
def test_evolution_spends_exactly_the_planned_nfes(steps, cost, config, budget, sizes):
    toy = Toy(steps=steps, cost=cost, max_batch=2)
    unit = steps * (2 if cost else 1)
    planned = estimate_nfe("evolution", toy.sigmas, cost=cost, budget_nfe=budget, **config)
    result = evolutionary_search(toy.problem(), budget_nfe=budget, **config)
    assert result.nfe == result.nfe_planned == planned == sum(sizes) * unit
    assert budget is None or result.nfe <= budget
    assert [sum(c.round == g for c in result.candidates) for g in range(len(sizes))] == sizes
    assert result.config["generations_run"] == len(sizes) - 1
    wanted = config["n"] + config["generations"] * (config["n"] - config["elite"])
    assert any(f"pays for {sum(sizes)} of the {wanted}" in n for n in result.notes) == (sum(sizes) < wanted)


@pytest.mark.parametrize("config, param", [
    (dict(n=4, elite=4), "elite"), (dict(n=4, elite=-1), "elite"), (dict(n=1), "elite"),
    (dict(n=4, tournament=5), "tournament"), (dict(n=4, tournament=0), "tournament"),
    (dict(mutation=0.0), "mutation"), (dict(mutation=1.5), "mutation"), (dict(generations=-1), "generations"),
    (dict(n=0), "n"), (dict(generations=1.5), "generations"),
])
def test_bad_settings_raise_a_setting_error_naming_the_parameter_before_sampling(config, param):
    toy = Toy(steps=4)
    with pytest.raises(SettingError) as caught:
        estimate_nfe("evolution", toy.sigmas, **config)
    assert caught.value.param == param and param in str(caught.value)
    with pytest.raises(SettingError):
        evolutionary_search(toy.problem(), **config)
    assert not toy.integrate_calls


def test_budget_below_one_candidate_names_the_minimum():
    toy = Toy(steps=6, cost=heun_cost)
    with pytest.raises(BudgetError, match="costs 12 NFEs, so the minimum budget is 12"):
        evolutionary_search(toy.problem(), budget_nfe=11)
    assert not toy.integrate_calls


def test_evolution_is_deterministic_and_batch_size_invariant():
    config = dict(n=5, generations=4, elite=2, tournament=3, mutation=0.6, budget_nfe=5 * 16, top_k=3)
    results = [run_search("evolution", Toy(steps=5, max_batch=b).problem(), **config) for b in (1, 3, 5, 64, 64)]
    assert_bit_identical(results)
    assert results[3].to_dict() == results[4].to_dict()
    assert [c.extra for c in results[0].candidates] == [c.extra for c in results[2].candidates]


@pytest.mark.parametrize("mode,weights,seed", [("rank", None, 0), ("zscore", [2.0, 1.0], 1)])
def test_ensemble_selection_uses_the_aggregate_over_all_finals_at_each_generation_end(mode, weights, seed):
    g = torch.Generator().manual_seed(seed)
    tables = {name: (torch.randint(0, 6, (64,), generator=g) if mode == "rank" else torch.randn(64, generator=g))
              .tolist() for name in "AB"}
    config = dict(n=4, generations=4, elite=1, tournament=2, top_k=3)
    results = [table_search("evolution", tables, b, weights=weights, mode=mode, **config) for b in (1, 3, 64)]
    assert_bit_identical(results)
    r = results[0]

    def aggregate(ids):
        values = combine({k: torch.tensor([float(v[i]) for i in ids]) for k, v in tables.items()}, weights, mode)
        return dict(zip(ids, values.tolist()))

    ends = {gen: aggregate([c.id for c in r.candidates if c.round <= gen]) for gen in range(5)}  # at each end
    for gen, population in replay(r, 1, lambda g: ends[g - 1]).items():
        elites = sorted(population, key=lambda i: (-ends[gen - 1][i], i))[:1]
        assert r.notes[gen - 1].startswith(f"generation {gen}: elite {elites} kept")
        for c in (c for c in r.candidates if c.round == gen):
            assert set(c.extra["tournament"]) <= set(population)
            assert c.parent == max(c.extra["tournament"], key=lambda i: (ends[gen - 1][i], -i))
    assert {c.id: c.score for c in r.candidates} == ends[4]
    assert r.topk_ids == sorted(ends[4], key=lambda i: (-ends[4][i], i))[:3]


def _linear_problem(direction, max_batch=8):
    """integrate is the identity and the score is <x, direction>: an unbounded climb best-of-N cannot make."""
    def integrate(x, sigmas, batch):
        return x, x

    def score(x0, sigma, batch):
        return x0.flatten(1) @ direction.flatten()

    return SearchProblem(integrate=integrate, score=score, sigmas=torch.linspace(1, 0, 3),
                         noise=seeded_noise(5, SHAPE), renoise=renoise_ve, max_batch=max_batch)


def test_evolution_climbs_a_linear_score_far_beyond_best_of_n_at_the_same_budget():
    direction = torch.ones(SHAPE) / math.sqrt(math.prod(SHAPE))  # score = a N(0, 1) draw for a Gaussian noise
    evo = evolutionary_search(_linear_problem(direction), n=4, generations=20, elite=1, tournament=2, mutation=0.5)
    rnd = random_search(_linear_problem(direction), n=evo.nfe // 2)
    assert evo.nfe == rnd.nfe == 2 * 64
    # the best of 64 standard normal draws passes 3.2 with probability 64 * P(z > 3.2) = 4.4%
    assert evo.best_score > 3.2 > rnd.best_score
    best_by_generation = [max(c.score for c in evo.candidates if c.round <= g) for g in range(21)]
    assert best_by_generation[-1] > best_by_generation[0] + 2.0

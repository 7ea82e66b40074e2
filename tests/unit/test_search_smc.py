"""SMC / Feynman-Kac steering: schedule, potentials, systematic resampling, re-noising, lineage, NFE accounting,
batch-size invariance, ensembles, and that resampling steers towards what the verifier rewards."""

import math

import pytest
import torch

from noise_search.search import BudgetError, SettingError, estimate_nfe, random_search, run_search, smc_search
from noise_search.search.budget import plan_smc
from noise_search.search.smc import (
    effective_sample_size,
    normalized_weights,
    potential_step,
    resample_uniform,
    systematic_resample,
)
from noise_search.tests.helpers import toys
from noise_search.tests.helpers.tables import table_search
from noise_search.tests.helpers.toys import Toy, assert_bit_identical, heun_cost
from noise_search.verifiers.ensemble import combine


class Recording(toys.Recording):
    """Score tables here are keyed by the candidate itself."""

    def table_key(self, c):
        return c


class UnitToy(Recording):
    """The toy with unit noise that integrate scales to sigma_max, so re-noising with noise(id) is the exact kernel."""

    def __init__(self, **kw):
        super().__init__(start_scale=False, **kw)

    def integrate(self, x, sigmas, batch):
        return super().integrate(x * float(sigmas[0]) if batch[0].from_noise else x, sigmas, batch)


class AncestralToy(Recording):
    """An SDE-like sampler: each step adds noise seeded by the candidate id, as the nodes' noise samplers do."""

    def integrate(self, x, sigmas, batch):
        x_end, x0 = super().integrate(x, sigmas, batch)
        kick = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(1000 + c.id))
                            for c in batch])
        return x_end + 0.1 * kick, x0


FOUR_POINTS = {"sigma_start": 0.8, "sigma_end": 0.2, "interval": 0.2}  # 20 steps: potentials at 4, 8, 12, 16


def _rounds(result):
    out = {}
    for c in result.candidates:
        out.setdefault(c.round, []).append(c)
    return out


# --- the pieces ---------------------------------------------------------------------------------------------------

def test_potentials_carry_the_running_max_the_running_sum_or_the_last_reward():
    assert potential_step("max", 2.0, 3.0, None) == (6.0, 3.0)
    assert potential_step("max", 2.0, 1.0, 3.0) == (6.0, 3.0)
    assert potential_step("max", 2.0, 5.0, 3.0) == (10.0, 5.0)
    assert potential_step("sum", 2.0, 3.0, None) == (6.0, 3.0)
    assert potential_step("sum", 2.0, -1.0, 3.0) == (4.0, 2.0)
    assert potential_step("difference", 2.0, 3.0, None) == (6.0, 3.0)
    assert potential_step("difference", 2.0, 1.0, 3.0) == (-4.0, 1.0)


def test_weights_and_effective_sample_size():
    w = normalized_weights([1000.0, 1000.0, 1000.0 - math.log(2)])  # softmax: no overflow at any scale
    assert w.dtype == torch.float64 and w.tolist() == pytest.approx([0.4, 0.4, 0.2])
    assert effective_sample_size(w) == pytest.approx(1 / 0.36)
    assert effective_sample_size(normalized_weights([0.0] * 5)) == pytest.approx(5)
    assert effective_sample_size(normalized_weights([0.0, -1e4])) == pytest.approx(1)


def test_systematic_resampling_gives_floor_or_ceil_copies_and_never_picks_a_zero_weight():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 5, 16):
        for u in (0.0, 0.37, 0.999999):
            assert systematic_resample(torch.full((k,), 1.0 / k, dtype=torch.float64), u) == list(range(k))
            w = torch.rand(k, generator=g, dtype=torch.float64) ** 3
            w[0] = 0.0 if k > 1 else w[0]
            w = w / w.sum()
            picks = systematic_resample(w, u)
            assert len(picks) == k and picks == sorted(picks) and (k == 1 or 0 not in picks)
            counts = torch.bincount(torch.tensor(picks), minlength=k)
            assert all(math.floor(k * p) <= c <= math.ceil(k * p) for p, c in zip(w.tolist(), counts.tolist()))
    assert systematic_resample(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), 0.5) == [1, 2, 3, 3]


def test_resampling_offset_depends_only_on_the_point_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    offsets = [resample_uniform(r) for r in range(6)]
    assert torch.equal(before, torch.random.get_rng_state())
    assert offsets == [resample_uniform(r) for r in range(6)] and len(set(offsets)) == 6
    assert all(0.0 <= u < 1.0 for u in offsets)


# --- schedule and cost ----------------------------------------------------------------------------------------------

def test_schedule_maps_fractions_onto_steps():
    plan = plan_smc(lambda s: len(s) - 1, Toy(steps=20).sigmas, n=4, potential="max", lam=1.0, ess_threshold=0.5,
                    sigma_start=0.8, sigma_end=0.2, interval=0.2, delta_f=0.1)
    assert (plan.points, plan.f) == ([4, 8, 12, 16], 2)
    assert plan.segments == [(0, 4), (2, 8), (6, 12), (10, 16), (14, 20)]
    assert (plan.unit, plan.total) == (28, 112)
    plan = plan_smc(lambda s: len(s) - 1, Toy(steps=10).sigmas, n=3, potential="sum", lam=1.0, ess_threshold=0.5,
                    sigma_start=0.75, sigma_end=0.0, interval=0.3, delta_f=0.0)
    # start round(2.5) = 3, every 3, the last point before step 10; no re-noising: segments tile the schedule
    assert (plan.points, plan.f, plan.segments) == ([3, 6, 9], 0, [(0, 3), (3, 6), (6, 9), (9, 10)])
    assert plan.total == 3 * 10


@pytest.mark.parametrize("steps,cost,n,kw,budget", [
    (20, None, 4, {}, None), (20, heun_cost, 4, {}, None), (10, None, 5, {"delta_f": 0.0}, None),
    (30, None, 3, {"interval": 0.1, "delta_f": 0.2, "sigma_start": 0.6}, None),
    (20, None, 8, {}, 100), (20, heun_cost, 6, {"sigma_end": 0.5}, 150), (12, None, 7, {"interval": 0.5}, 55),
])
def test_smc_spends_exactly_the_planned_nfes_within_budget(steps, cost, n, kw, budget):
    toy = Recording(steps=steps, cost=cost, max_batch=3)
    planned = estimate_nfe("smc", toy.sigmas, cost=cost, budget_nfe=budget, n=n, **kw)
    result = smc_search(toy.problem(), n=n, budget_nfe=budget, **kw)
    assert result.nfe == result.nfe_planned == planned
    per_step = 2 if cost else 1
    spent = 0
    for ids, s_from, s_to in toy.integrate_calls:
        lo, hi = int((toy.sigmas == s_from).nonzero()[0]), int((toy.sigmas == s_to).nonzero()[0])
        spent += len(ids) * (hi - lo) * per_step
    assert spent == result.nfe
    finals = [c for c in result.candidates if c.final]
    assert len(finals) == result.config["n_run"] and all(c.sigma == 0.0 for c in finals)
    if budget is not None:
        assert result.nfe <= budget < estimate_nfe("smc", toy.sigmas, cost=cost, n=n, **kw)
        assert result.config["n_run"] < n and any("pays for" in note for note in result.notes)
    else:
        assert not any("pays for" in note for note in result.notes)


def test_budget_shrinks_the_particles_and_errors_below_one():
    toy = Recording(steps=20)
    result = smc_search(toy.problem(), n=8, budget_nfe=100)  # defaults: 6 + 6 + 6 + 8 = 26 NFEs a particle
    assert result.config["n_run"] == 3 and result.nfe == 78 and result.config["points"] == [6, 10, 14]
    assert "budget_nfe=100 pays for 3 of the 8 particles (26 NFEs each): raise budget_nfe to 208" in result.notes[-1]
    toy = Recording(steps=20)
    with pytest.raises(BudgetError, match="costs 26 NFEs, so the minimum budget is 26"):
        smc_search(toy.problem(), n=8, budget_nfe=25)
    assert not toy.integrate_calls


@pytest.mark.parametrize("kw,param", [
    ({"potential": "product"}, "potential"), ({"lam": -1.0}, "lam"), ({"lam": float("inf")}, "lam"),
    ({"ess_threshold": 1.5}, "ess_threshold"), ({"sigma_start": 0.0}, "sigma_start"),
    ({"sigma_end": 0.9}, "sigma_end"), ({"interval": 0.0}, "interval"), ({"delta_f": -0.1}, "delta_f"),
    ({"sigma_start": 0.95, "delta_f": 0.1}, "sigma_start"),  # first point at step 1, re-noising needs 2
    ({"sigma_start": 0.02, "sigma_end": 0.0}, "sigma_start"),  # first point at the last step: nothing to resample
    ({"n": 0}, "n"),
])
def test_bad_settings_are_refused_before_sampling_naming_the_parameter(kw, param):
    toy = Recording(steps=20)
    with pytest.raises(SettingError) as info:
        smc_search(toy.problem(), **kw)
    assert info.value.param == param and "{" + param + "}" in info.value.text
    with pytest.raises(SettingError):
        estimate_nfe("smc", toy.sigmas, **kw)
    assert not toy.integrate_calls
    with pytest.raises(TypeError, match="temperature"):
        estimate_nfe("smc", toy.sigmas, temperature=1.0)


# --- what a run does ------------------------------------------------------------------------------------------------

def _replay(result, potential, lam, ess_threshold):
    """Each round's parents from the previous round's scores, by the documented rule (weights multiply since the
    last resampling, which resets them)."""
    rounds = _rounds(result)
    carry, log_w, parents, resampled = {}, {}, {}, []
    for r in sorted(rounds)[:-1]:
        members = rounds[r]
        for c in members:
            g, carry[c.id] = potential_step(potential, lam, c.score, carry.get(c.parent))
            log_w[c.id] = g + log_w.get(c.parent, 0.0)
        w = torch.softmax(torch.tensor([log_w[c.id] for c in members], dtype=torch.float64), 0)
        assert [c.extra["weight"] for c in members] == pytest.approx(w.tolist(), abs=1e-12)
        if 1.0 / float((w * w).sum()) < ess_threshold * len(members):
            picks = systematic_resample(w, resample_uniform(r))
            log_w.update({c.id: 0.0 for c in members})
            resampled.append(members[0].extra["segment"][1])
        else:
            picks = list(range(len(members)))
        parents.update({c.id: members[a].id for c, a in zip(rounds[r + 1], picks)})
    return parents, resampled


@pytest.mark.parametrize("potential", ["max", "difference", "sum"])
def test_schedule_lineage_weights_and_resampling(potential):
    toy = UnitToy(steps=20, max_batch=3)
    result = smc_search(toy.problem(), n=5, potential=potential, lam=3.0, **FOUR_POINTS)
    rounds = _rounds(result)
    assert sorted(rounds) == [0, 1, 2, 3, 4] and [c.id for c in result.candidates] == list(range(25))
    assert all(c.kind == "particle" for c in result.candidates)
    assert all(c.from_noise and c.parent is None and c.root == c.id for c in rounds[0])
    by_id = {c.id: c for c in result.candidates}
    for r, (lo, hi) in enumerate([(0, 4), (2, 8), (6, 12), (10, 16), (14, 20)]):
        assert all(c.extra["segment"] == [lo, hi] for c in rounds[r])
        assert all(c.sigma == pytest.approx(float(toy.sigmas[hi])) for c in rounds[r])
        assert all(c.final == (r == 4) for c in rounds[r])
        if r:
            assert all(not c.from_noise and by_id[c.parent].round == r - 1 and c.root == by_id[c.parent].root
                       for c in rounds[r])
    assert all(sum(c.extra["weight"] for c in rounds[r]) == pytest.approx(1.0) for r in range(4))
    parents, resampled = _replay(result, potential, 3.0, 0.5)
    assert {c.id: c.parent for c in result.candidates if c.round} == parents
    assert result.config["resampled_at"] == resampled and resampled  # this toy resamples at some point
    assert any(len({c.parent for c in rounds[r]}) < 5 for r in range(1, 5))  # duplicates were made
    # every continuation starts from its parent's state re-noised 2 steps up with its own noise(id)
    assert [(k, s_from, s_to) for k, s_from, s_to in toy.renoise_calls] == \
        [(k, pytest.approx(float(toy.sigmas[p])), pytest.approx(float(toy.sigmas[p - 2])))
         for p in (4, 8, 12, 16) for k in (3, 2)]
    assert result.best_id == max(rounds[4], key=lambda c: (c.score, -c.id)).id
    assert torch.equal(result.best_noise, toy.noise(by_id[result.best_id].root))
    assert result.baseline_score is None and result.nfe == 5 * 28
    assert any("does not reproduce the best latent" in note for note in result.notes)


def test_without_resampling_weights_multiply_so_difference_telescopes_to_the_latest_reward():
    result = smc_search(UnitToy(steps=20).problem(), n=4, potential="difference", lam=0.7, ess_threshold=0.0,
                        **FOUR_POINTS)
    rounds = _rounds(result)
    assert result.config["resampled_at"] == [] and "never resampled" in result.notes[1]
    for r in range(4):
        assert [c.parent for c in rounds[r + 1]] == [c.id for c in rounds[r]]
        expected = torch.softmax(0.7 * torch.tensor([c.score for c in rounds[r]], dtype=torch.float64), 0)
        assert [c.extra["weight"] for c in rounds[r]] == pytest.approx(expected.tolist(), abs=1e-12)


def test_resampling_resets_the_weights():
    result = smc_search(UnitToy(steps=20).problem(), n=6, potential="difference", lam=0.7, ess_threshold=1.0,
                        **FOUR_POINTS)
    rounds = _rounds(result)
    assert result.config["resampled_at"] == [4, 8, 12, 16]
    by_id = {c.id: c for c in result.candidates}
    for r in range(1, 4):
        increments = [c.score - by_id[c.parent].score for c in rounds[r]]
        expected = torch.softmax(0.7 * torch.tensor(increments, dtype=torch.float64), 0)
        assert [c.extra["weight"] for c in rounds[r]] == pytest.approx(expected.tolist(), abs=1e-12)


def test_resampling_steers_every_particle_to_the_lineage_the_verifier_rewards():
    toy = UnitToy(steps=20, max_batch=4)
    toy.table = lambda c: 1.0 if c.root == 2 else 0.0
    result = smc_search(toy.problem(), n=6, lam=20.0, **FOUR_POINTS)
    rounds = _rounds(result)
    assert result.config["resampled_at"] == [4]  # then every particle shares one root and the weights stay equal
    assert all(c.root == 2 for r in range(1, 5) for c in rounds[r])
    finals = [toy.inputs[c.id] for c in rounds[4]]  # the copies diverged through re-noising
    assert all(not torch.equal(a, b) for i, a in enumerate(finals) for b in finals[i + 1:])
    assert result.best_noise.equal(toy.noise(2))


def test_lam_zero_without_renoising_is_best_of_n():
    smc = smc_search(Toy(steps=10).problem(), n=5, lam=0.0, delta_f=0.0)
    best = random_search(Toy(steps=10).problem(), n=5)
    assert smc.config["resampled_at"] == [] and smc.nfe == best.nfe == 50
    assert torch.equal(smc.best, best.best) and torch.equal(smc.best_noise, best.best_noise)
    assert smc.best_score == best.best_score
    assert any("it reproduces the best latent only with a deterministic one-step sampler" in n for n in smc.notes)


def test_infinite_scores_are_refused_at_the_potential():
    toy = Recording(table=lambda c: math.inf if c.id == 1 else 0.0, steps=20)
    with pytest.raises(ValueError, match="potentials at sigma .* are not finite"):
        smc_search(toy.problem(), n=3)


def test_without_renoising_copies_stay_identical_under_an_ode_sampler_and_the_notes_say_so():
    table = lambda c: 1.0 if c.root == 1 else 0.0  # noqa: E731
    result = smc_search(Recording(table=table, steps=20).problem(), n=4, lam=20.0, delta_f=0.0, **FOUR_POINTS)
    assert result.config["resampled_at"] == [4]
    note = next(note for note in result.notes if "stayed identical" in note)
    assert "[4, 5]" in note and "delta_f > 0" in note
    toy = AncestralToy(table=table, steps=20)
    result = smc_search(toy.problem(), n=4, lam=20.0, delta_f=0.0, **FOUR_POINTS)
    assert not toy.renoise_calls and not any("stayed identical" in note for note in result.notes)
    assert "not re-noised" in result.notes[0]


def test_smc_beats_random_search_at_equal_budget_on_the_toy():
    def mean_best(search, **kw):
        return sum(search(UnitToy(steps=20, seed=s).problem(), budget_nfe=224, **kw).best_score
                   for s in range(12)) / 12

    smc, random = mean_best(smc_search, n=8, lam=3.0, **FOUR_POINTS), mean_best(random_search, n=11)
    assert smc > random + 1.0


def test_smc_is_deterministic_and_batch_size_invariant():
    results = [run_search("smc", UnitToy(steps=20, max_batch=b).problem(), n=7, lam=3.0, top_k=3)
               for b in (1, 3, 7, 7)]
    assert results[0].config["resampled_at"]
    assert_bit_identical(results)
    assert results[2].to_dict() == results[3].to_dict()


# --- ensembles ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,seed", [("rank", 0), ("zscore", 1)])
def test_ensemble_potentials_are_aggregated_over_all_particles_of_a_point(mode, seed):
    g = torch.Generator().manual_seed(seed)
    tables = {name: (torch.randint(0, 6, (64,), generator=g) if mode == "rank" else torch.randn(64, generator=g))
              .tolist() for name in "AB"}
    config = dict(n=5, potential="max", lam=3.0, ess_threshold=0.9, **FOUR_POINTS)
    results = [table_search("smc", tables, b, mode=mode, top_k=2, **config) for b in (1, 3, 64)]
    assert_bit_identical(results)
    r = results[0]
    rounds = _rounds(r)
    for members in rounds.values():  # every round's scores are the aggregate over exactly its 5 particles
        ids = [c.id for c in members]
        whole = combine({n: torch.tensor([float(v[i]) for i in ids]) for n, v in tables.items()}, None, mode)
        assert [c.score for c in members] == pytest.approx(whole.tolist(), abs=1e-12)
    parents, resampled = _replay(r, "max", 3.0, 0.9)
    assert {c.id: c.parent for c in r.candidates if c.round} == parents and resampled
    finals = rounds[max(rounds)]
    assert r.best_id == max(finals, key=lambda c: (c.score, -c.id)).id

"""Early exit: every algorithm stops once a score reaches the user's threshold, says how much of its plan it left
unspent, and returns the same result whatever the batch size."""

import pytest
import torch

from noise_search.search import SettingError, estimate_nfe, run_search
from noise_search.tests.helpers.toys import Toy

PATHS = {"n": 2, "m": 3, "sigma_start": 0.8, "delta_f": 0.1, "delta_b": 0.3}
CONFIGS = {"random": {"n": 12}, "zero_order": {"n": 3, "rounds": 4, "step_cos": 0.9}, "paths": PATHS,
           "smc": {"n": 4, "sigma_start": 0.8, "sigma_end": 0.2, "interval": 0.2},
           "trust_region": {"n": 4, "regions": 2, "per_region": 2, "rounds": 4},
           "evolution": {"n": 4, "generations": 4}}


def _run(algorithm: str, max_batch: int, stop_score=None, **overrides):
    toy = Toy(steps=10, max_batch=max_batch)
    config = dict(CONFIGS[algorithm], **overrides)
    return run_search(algorithm, toy.problem(), stop_score=stop_score, **config), toy


def _threshold(algorithm: str) -> float:
    """A score reached part-way: between the no-search run's best intermediate and its final best."""
    full, _ = _run(algorithm, max_batch=1)
    scores = sorted(c.score for c in full.candidates if c.score is not None)
    return scores[len(scores) // 2]


def _same(a, b) -> None:
    assert torch.equal(a.best, b.best) and torch.equal(a.topk, b.topk) and torch.equal(a.best_noise, b.best_noise)
    assert (a.best_id, a.topk_ids, a.topk_scores) == (b.best_id, b.topk_ids, b.topk_scores)
    assert [(c.id, c.parent, c.score) for c in a.candidates] == [(c.id, c.parent, c.score) for c in b.candidates]
    kept = [[n for n in r.notes if "were left out" not in n] for r in (a, b)]  # only batching computes extras
    assert kept[0] == kept[1]


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_a_reached_threshold_stops_the_search_and_says_what_was_left(algorithm):
    threshold = _threshold(algorithm)
    full, toy = _run(algorithm, max_batch=1)
    early, _ = _run(algorithm, max_batch=1, stop_score=threshold)
    planned = estimate_nfe(algorithm, toy.sigmas, **CONFIGS[algorithm])
    assert full.nfe == planned and early.nfe < planned
    note = next(n for n in early.notes if n.startswith("stopped early"))
    assert f"stop_score={threshold:g}" in note and f"of the {planned} planned NFEs" in note
    assert f"{planned - early.nfe} were left unspent" in note  # one candidate per batch: nothing dropped
    assert len(early.candidates) < len(full.candidates)
    assert all(c.final for c in early.candidates if c.id in early.topk_ids)


@pytest.mark.parametrize("algorithm", list(CONFIGS))
def test_early_exit_does_not_depend_on_the_batch_size(algorithm):
    threshold = _threshold(algorithm)
    results = [_run(algorithm, max_batch=b, stop_score=threshold)[0] for b in (1, 3, 7)]
    for r in results[1:]:
        _same(results[0], r)


def test_random_stops_at_the_first_candidate_reaching_the_threshold_and_drops_its_batch_mates():
    full, toy = _run("random", max_batch=1)
    scores = {c.id: c.score for c in full.candidates}
    threshold = scores[4] if scores[4] > max(scores[i] for i in range(4)) else max(scores.values())
    first = min(i for i, s in scores.items() if s >= threshold)
    one, _ = _run("random", max_batch=1, stop_score=threshold)
    batched, _ = _run("random", max_batch=8, stop_score=threshold)
    assert [c.id for c in one.candidates] == list(range(first + 1))
    assert one.best_score == max(scores[i] for i in range(first + 1))
    assert one.nfe == (first + 1) * 10
    _same(one, batched)
    if first < 7:
        assert batched.nfe == 8 * 10 and any("left out" in n for n in batched.notes)


def test_an_unreached_threshold_changes_nothing():
    for algorithm in CONFIGS:
        full, _ = _run(algorithm, max_batch=3)
        never, _ = _run(algorithm, max_batch=3, stop_score=1e9)
        assert never.nfe == full.nfe and never.best_id == full.best_id
        assert not any("stopped early" in n for n in never.notes)


def test_ensembles_refuse_a_threshold():
    toy = Toy(steps=10)
    problem = toy.problem(aggregate=lambda members: members["neg_dist"])
    with pytest.raises(SettingError) as caught:
        run_search("random", problem, n=4, stop_score=0.5)
    assert caught.value.param == "stop_score" and "ensemble" in str(caught.value)

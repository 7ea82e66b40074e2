"""Ensemble scores are relative to a set, so every search decision aggregates over its whole comparable set (all
finals; one Search over Paths round) and the result cannot depend on max_batch (issue 8, item 3).

Table members give hand-checked cases and a reference that replays each algorithm's decisions with `combine`;
real tiny verifiers (CLIPScore + aesthetic) score images decoded from the toy problem.
"""


import pytest
import torch

from noise_search.search import run_search
from noise_search.tests.helpers.tables import BATCHES, aggregate_table, ensemble_problem, table_search, top_ids
from noise_search.tests.helpers.tiny_models import make_aesthetic_mlp, make_hf_clip
from noise_search.tests.helpers.toys import Toy, assert_bit_identical
from noise_search.verifiers import load_verifier
from noise_search.verifiers.ensemble import Ensemble, combine

ISSUE = {"A": [7, 5, 9, 3], "B": [8, 2, 4, 2]}


def test_issue_example_random_search_picks_one_winner_at_every_batch_size():
    results = [table_search("random", ISSUE, b, n=4, top_k=4) for b in (1, 3, 4)]
    assert_bit_identical(results)
    r = results[0]
    # over all four: A percentiles [2/3, 1/3, 1, 0], B [1, 1/6, 2/3, 1/6] -> [5/6, 1/4, 5/6, 1/12]; 0 and 2 tie and
    # the lower id wins (the old running pool ranked candidate 2 against three, candidate 0 against itself)
    assert r.best_id == 0 and r.topk_ids == [0, 2, 1, 3]
    assert [c.score for c in r.candidates] == pytest.approx([5 / 6, 1 / 4, 5 / 6, 1 / 12])
    assert r.topk_scores == pytest.approx([5 / 6, 5 / 6, 1 / 4, 1 / 12]) and r.baseline_score == pytest.approx(5 / 6)
    assert [c.members for c in r.candidates] == [{"A": a, "B": b} for a, b in zip(ISSUE["A"], ISSUE["B"])]
    assert torch.equal(r.best, results[2].best) and torch.equal(r.best_noise, Toy().noise(0))
    # curve: the best aggregate over the finals scored by each NFE ([7]/[8] alone -> 0.5; then 1 of 2; 3/4; 5/6)
    assert [n for n, _ in r.curve] == [20, 40, 60, 80]
    assert [s for _, s in r.curve] == pytest.approx([0.5, 1.0, 0.75, 5 / 6])
    assert dict(results[1].curve).items() <= dict(r.curve).items() and results[2].curve == [r.curve[-1]]


def test_zero_order_judges_the_pivot_over_all_finals_at_the_round_end():
    tables = {"A": [4, 2, 1, 9, 4, 8, 9], "B": [2, 4, 1, 1, 5, 7, 8]}
    results = [table_search("zero_order", tables, b, n=3, rounds=2, top_k=2) for b in BATCHES]
    assert_bit_identical(results)
    r = results[0]
    # round 1 over {0..3}: [2/3, 2/3, 1/12, 7/12]: neighbour 1 only ties the pivot, so 0 stays (the old running pool
    # moved the pivot to 3 at batch size 1 and to 1 at batch size 3); round 2 over all 7 finals (in twelfths):
    # [4.5, 4, 0.5, 6, 6.5, 9, 11.5]: 6 beats the pivot and wins
    assert [c.parent for c in r.candidates] == [None, 0, 0, 0, 0, 0, 0]
    assert [note.split(": ")[-1] for note in r.notes[:2]] == ["no improvement", "pivot -> 6"]
    assert [c.score * 12 for c in r.candidates] == pytest.approx([4.5, 4, 0.5, 6, 6.5, 9, 11.5])
    assert r.best_id == 6 and r.topk_ids == [6, 5] and r.baseline_score == pytest.approx(4.5 / 12)


def test_paths_keeps_the_top_n_of_each_whole_round():
    # ids 2..5 (round 1), 6..9 (round 2), 10 and 11 run to the end; the old running pool mixed the rounds and
    # picked 11 at batch size 1 and 10 at batch size 4
    tables = {"A": [1, 5, 6, 5, 9, 3, 8, 7, 7, 8, 4, 0], "B": [8, 0, 1, 6, 0, 9, 7, 5, 3, 5, 1, 3]}
    results = [table_search("paths", tables, b, n=2, m=2, max_rounds=2, top_k=2) for b in (1, 3, 4)]
    assert_bit_identical(results)
    r = results[0]
    by_id = {c.id: c for c in r.candidates}
    # round 1 over {2..5}: A [6, 5, 9, 3] -> [2, 1, 3, 0] / 3, B [1, 6, 0, 9] -> [1, 2, 0, 3] / 3: all four tie
    # at 1/2, so the lowest ids 2 and 3 go on
    assert [by_id[i].score for i in (2, 3, 4, 5)] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    # round 2 over {6..9} (children of 2, 2, 3, 3): A [8, 7, 7, 8] -> [2.5, 0.5, 0.5, 2.5] / 3,
    # B [7, 5, 3, 5] -> [3, 1.5, 0, 1.5] / 3: 6 (11/12) and 9 (2/3) go on
    assert [by_id[i].parent for i in range(6, 12)] == [2, 2, 3, 3, 6, 9]
    assert [by_id[i].score * 12 for i in (6, 7, 8, 9)] == pytest.approx([11, 4, 1, 8])
    # the two finals: A [4, 0], B [1, 3] tie at 1/2; the lower id wins
    assert r.best_id == 10 and r.topk_ids == [10, 11] and r.topk_scores == pytest.approx([0.5, 0.5])


# --- every decision against a reference that replays the algorithm on whole sets ----------------------------------

def reference(algorithm, tables, config, rounds_run, tail, weights, mode):
    """(parent by id, score by id, winner) from combine over each comparable set, chunking nowhere in sight."""
    agg = lambda ids: aggregate_table(tables, ids, weights, mode)  # noqa: E731
    if algorithm == "random":
        scores = agg(list(range(config["n"])))
        return {i: None for i in scores}, scores, top_ids(scores, list(scores), 1)[0]
    if algorithm == "zero_order":
        parents, finals, pivot = {0: None}, [0], 0
        for _ in range(rounds_run):
            ids = list(range(len(finals), len(finals) + config["n"]))
            parents.update({i: pivot for i in ids})
            finals += ids
            scores = agg(finals)
            challenger = top_ids(scores, ids, 1)[0]
            pivot = challenger if scores[challenger] > scores[pivot] else pivot
        return parents, scores, top_ids(scores, finals, 1)[0]
    n, m = config["n"], config["m"]
    parents, scores, kept, next_id = {i: None for i in range(n)}, {}, list(range(n)), n
    for _ in range(rounds_run):
        ids = list(range(next_id, next_id + n * m))
        parents.update({i: kept[(i - next_id) // m] for i in ids})
        next_id += n * m
        scores.update(agg(ids))
        kept = top_ids(scores, ids, n)
    if tail:
        ids = list(range(next_id, next_id + n))
        parents.update(dict(zip(ids, kept)))
        scores.update(agg(ids))
        kept = top_ids(scores, ids, 1)
    return parents, scores, kept[0]


CASES = [("random", {"n": 9}), ("zero_order", {"n": 3, "rounds": 4}),
         ("paths", {"n": 2, "m": 3, "max_rounds": 3}), ("paths", {"n": 2, "m": 3, "delta_b": 0.3})]


@pytest.mark.parametrize("mode,weights,seed", [("rank", None, 0), ("rank", [1.0, 3.0], 1), ("zscore", [2.0, 1.0], 2)])
@pytest.mark.parametrize("algorithm,config", CASES, ids=["random", "zero_order", "paths_tail", "paths_to_end"])
def test_every_decision_aggregates_its_whole_set_at_every_batch_size(algorithm, config, mode, weights, seed):
    g = torch.Generator().manual_seed(seed)

    def draw():  # rank mode: few values, so ties inside and across members
        return (torch.randint(0, 6, (64,), generator=g) if mode == "rank" else torch.randn(64, generator=g)).tolist()

    tables = {"A": draw(), "B": draw()}
    results = [table_search(algorithm, tables, b, weights=weights, mode=mode, top_k=3, **config) for b in BATCHES]
    assert_bit_identical(results)
    r = results[0]
    tail = algorithm == "paths" and r.candidates[-1].round > r.config["rounds_run"]
    assert tail == ("max_rounds" in config)
    parents, scores, winner = reference(algorithm, tables, config, r.config.get("rounds_run"), tail, weights, mode)
    assert {c.id: c.parent for c in r.candidates} == parents
    assert {c.id: c.score for c in r.candidates if c.score is not None} == scores
    assert r.best_id == winner and r.best_score == scores[winner]
    finals = [c.id for c in r.candidates if c.sigma == 0.0]
    assert r.topk_ids == top_ids(scores, finals, 3)


# --- real tiny verifiers ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_ensemble(tmp_path_factory):
    """CLIPScore + LAION aesthetic on tiny real-format checkpoints. batch_size=1: every image runs through the
    models alone, so a raw score cannot change in its last bits with the size of the chunk it came in."""
    root = tmp_path_factory.mktemp("ensemble_models")
    clip = make_hf_clip(root / "clip", seed=3)
    mlp = make_aesthetic_mlp(root / "mlp.pth", input_dim=16, seed=5)
    return Ensemble([load_verifier("clip_score", str(clip), batch_size=1),
                     load_verifier("aesthetic", str(mlp), clip_model=str(clip), batch_size=1)])


def decode(x0, batch):
    """Toy state [K, 2, 3, 3] -> RGB image [K, 32, 32, 3] in 0..1 (the toy's 'VAE'). Exactly rounded ops only: a
    vectorised transcendental (sigmoid) differs in the last bit between a tensor's SIMD body and its tail."""
    rgb = (torch.stack([x0[:, 0], x0[:, 1], x0[:, 0] - x0[:, 1]], dim=1) * 0.25 + 0.5).clamp(0.0, 1.0)
    return torch.nn.functional.interpolate(rgb, size=(32, 32), mode="nearest").permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("algorithm,config", [("random", {"n": 7}), ("zero_order", {"n": 3, "rounds": 2}),
                                              ("paths", {"n": 2, "m": 2, "max_rounds": 2})])
def test_real_ensemble_picks_the_argmax_of_combine_over_all_finals_at_every_batch_size(real_ensemble, algorithm,
                                                                                      config):
    results = [run_search(algorithm, ensemble_problem(real_ensemble, b, decode, prompt="a cat"), top_k=3, **config)
               for b in BATCHES]
    assert_bit_identical(results)
    r = results[0]
    finals = [c for c in r.candidates if c.sigma == 0.0]
    raw = {n: torch.tensor([c.members[n] for c in finals]) for n in real_ensemble.names}
    combined = combine(raw).tolist()
    order = sorted(range(len(finals)), key=lambda j: (-combined[j], finals[j].id))
    assert r.best_id == finals[order[0]].id and r.topk_ids == [finals[j].id for j in order[:3]]
    assert [c.score for c in finals] == combined and r.best_score == max(combined)
    assert list(r.candidates[-1].members) == ["clip_score", "aesthetic"]
    if algorithm == "random":  # the members disagree, so the aggregate (not one member) decides
        assert int(raw["clip_score"].argmax()) != int(raw["aesthetic"].argmax())


def test_an_aggregate_needs_member_scores_and_one_value_per_candidate():
    toy = Toy(steps=3)
    with pytest.raises(ValueError, match=r"aggregate is set, so score\(\) must return \(scores, \{member: scores\}\)"):
        run_search("random", toy.problem(score=lambda x0, s, b: torch.zeros(len(b)), aggregate=combine), n=2)
    with pytest.raises(ValueError, match=r"aggregate\(\) must return one score per candidate: expected 2, got 1"):
        run_search("random", toy.problem(aggregate=lambda members: torch.zeros(1)), n=2)
    with pytest.raises(ValueError, match="score member 'neg_dist' returned NaN for candidate 0"):
        nan = lambda x0, s, b: (torch.zeros(len(b)), {"neg_dist": torch.full((len(b),), float("nan"))})  # noqa: E731
        run_search("random", toy.problem(score=nan, aggregate=combine), n=2)

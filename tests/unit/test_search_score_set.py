"""rank_set: a set scored outside a search (Score Images) is ranked as a search ranks its finals: an ensemble's
aggregate over the whole set whatever the chunks it was scored in, best first by (-score, id), 0 NFEs."""

import pytest
import torch

from noise_search.report.render import render_report
from noise_search.report.report import SearchReport
from noise_search.search._common import record_scores
from noise_search.search.budget import SettingError
from noise_search.search.score_set import rank_set, ranking
from noise_search.search.types import Candidate
from noise_search.verifiers.ensemble import combine

TABLE = {"A": [7.0, 5.0, 9.0, 3.0], "B": [8.0, 2.0, 4.0, 2.0]}
STATES = torch.arange(4 * 2 * 2 * 3, dtype=torch.float32).reshape(4, 2, 2, 3) / 48


def scored(chunk: int, aggregate: bool) -> list:
    """Four candidates whose member scores come back `chunk` at a time, each chunk's own aggregate as its scores."""
    cands = [Candidate(id=i, parent=None, round=0, kind="image", final=True) for i in range(4)]
    for lo in range(0, 4, chunk):
        members = {n: torch.tensor(v[lo:lo + chunk]) for n, v in TABLE.items()}
        out = (combine(members, mode="rank"), members) if aggregate else (members["A"], members)
        record_scores(cands[lo:lo + chunk], out, aggregate)
    return cands


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_an_ensemble_ranks_the_whole_set_whatever_the_chunks(chunk):
    r = rank_set("score_images", {}, scored(chunk, True), STATES, lambda m: combine(m, mode="rank"), top_k=2)
    # over all four: A percentiles [2/3, 1/3, 1, 0], B [1, 1/6, 2/3, 1/6]; 0 and 2 tie and the lower id wins
    assert [c.score for c in r.candidates] == pytest.approx([5 / 6, 1 / 4, 5 / 6, 1 / 12])
    assert ranking(r) == [0, 2, 1, 3] and r.best_id == 0 and r.topk_ids == [0, 2]
    assert r.topk_scores == pytest.approx([5 / 6, 5 / 6]) and r.best_score == pytest.approx(5 / 6)
    assert torch.equal(r.best, STATES[0]) and torch.equal(r.topk, STATES[[0, 2]])
    assert [c.members for c in r.candidates] == [{"A": a, "B": b} for a, b in zip(TABLE["A"], TABLE["B"])]
    assert r.nfe == r.nfe_planned == 0 and r.curve == [] and r.baseline_score is None and r.best_noise is None


def test_absolute_scores_are_kept_and_a_large_top_k_is_noted():
    r = rank_set("score_images", {"images": 4}, scored(2, False), STATES, None, top_k=9, notes=["given"])
    assert [c.score for c in r.candidates] == TABLE["A"] and ranking(r) == [2, 0, 1, 3]
    assert r.topk_ids == [2, 0, 1, 3] and r.topk.shape == (4, 2, 2, 3)
    assert r.notes[0] == "given" and "top_k=9 is larger than the 4 scored image(s)" in r.notes[1]
    assert r.to_dict()["algorithm"] == "score_images"


def test_a_ranked_set_renders_as_a_report():
    r = rank_set("score_images", {}, scored(4, True), STATES, lambda m: combine(m, mode="rank"), top_k=1)
    report = SearchReport(results=[r], verifier="ensemble", members=["A", "B"],
                          images=[{i: STATES[i] for i in range(4)}])
    chart = render_report(report, width=640)
    assert chart.shape[0] == 1 and chart.shape[-1] == 3 and float(chart.std()) > 0
    assert torch.equal(report.image(0, 3), STATES[3]) and report.thumb(0, 1).dtype == torch.uint8


def test_bad_arguments_are_refused():
    with pytest.raises(SettingError, match="top_k"):
        rank_set("score_images", {}, scored(4, False), STATES, None, top_k=0)
    with pytest.raises(ValueError, match="one state per candidate"):
        rank_set("score_images", {}, scored(4, False), STATES[:3], None, top_k=1)

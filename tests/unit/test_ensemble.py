"""Ensemble aggregation: hand-computed ranks and z-scores, weights, aggregate over a set, no state across calls."""

import math

import pytest
import torch

from noise_search.tests.helpers.tables import Table, images
from noise_search.verifiers.base import VerifierError
from noise_search.verifiers.ensemble import Ensemble, combine, percentiles, ranks, unique_names, zscores


def test_ranks_share_the_mean_rank_on_ties():
    assert ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert ranks(torch.tensor([5.0, 5.0, 5.0])).tolist() == [2.0, 2.0, 2.0]
    assert ranks(torch.tensor([2.0]), pool=torch.tensor([1.0, 2.0, 2.0, 9.0])).tolist() == [2.5]


def test_percentile_and_zscore_formulas():
    assert torch.allclose(percentiles(torch.tensor([3.0, 1.0, 3.0, 2.0])),
                          torch.tensor([2.5, 0.0, 2.5, 1.0], dtype=torch.float64) / 3)
    assert percentiles(torch.tensor([7.0])).tolist() == [0.5]
    z = zscores(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    expected = [(v - 3.0) / math.sqrt(3.5) for v in (1.0, 2.0, 3.0, 6.0)]  # mean 3, population variance 14 / 4
    assert torch.allclose(z, torch.tensor(expected, dtype=torch.float64))
    assert zscores(torch.tensor([4.0, 4.0])).tolist() == [0.0, 0.0]


def test_combine_weighted_ranks_by_hand():
    a, b = torch.tensor([3.0, 1.0, 3.0, 2.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    # percentiles a: [2.5, 0, 2.5, 1] / 3, b: [0, 1, 2, 3] / 3; weights 1 and 3
    expected = torch.tensor([2.5, 3.0, 8.5, 10.0]) / 3 / 4
    assert torch.allclose(combine({"a": a, "b": b}, weights={"a": 1.0, "b": 3.0}), expected)
    assert torch.allclose(combine({"a": a, "b": b}, weights=[1.0, 3.0]), expected)
    assert torch.allclose(combine({"a": a, "b": b}), torch.tensor([2.5, 1.0, 4.5, 4.0]) / 3 / 2)
    assert combine({"a": a}).dtype == torch.float32


def test_combine_zscore_mode_by_hand():
    a, b = torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([0.0, 0.0, 2.0, 2.0])
    za = [(v - 3.0) / math.sqrt(3.5) for v in (1.0, 2.0, 3.0, 6.0)]
    zb = [-1.0, -1.0, 1.0, 1.0]  # mean 1, population std 1
    expected = torch.tensor([(2 * x + y) / 3 for x, y in zip(za, zb)])
    assert torch.allclose(combine({"a": a, "b": b}, weights=[2.0, 1.0], mode="zscore"), expected)


def test_ensemble_score_equals_combine_and_hand_ranks():
    a, b = Table("a", [3, 1, 3, 2]), Table("b", [1, 2, 3, 4])
    ens = Ensemble([a, b], weights=[1.0, 3.0])
    out = ens.score(images([0, 1, 2, 3]))
    assert torch.allclose(out, torch.tensor([2.5, 3.0, 8.5, 10.0]) / 12)
    assert torch.equal(out, combine(ens.member_scores(), weights=[1.0, 3.0]))
    assert {k: v.tolist() for k, v in ens.member_scores().items()} == {"a": [3, 1, 3, 2], "b": [1, 2, 3, 4]}


def test_ensemble_output_follows_input_order():
    ens = Ensemble([Table("a", [3, 1, 3, 2, 0, 7]), Table("b", [1, 2, 3, 4, 9, 5])], mode="zscore")
    ids = [0, 1, 2, 3, 4, 5]
    base = ens.score(images(ids))
    perm = [4, 2, 5, 0, 3, 1]
    assert torch.allclose(ens.score(images(perm)), base[perm])


def test_each_call_aggregates_over_its_own_images_only():
    ens = Ensemble([Table("a", [3, 1, 3, 2])])
    assert ens.score(images([0, 1])).tolist() == [1.0, 0.0]  # [3, 1] alone
    assert ens.score(images([2, 3])).tolist() == [1.0, 0.0]  # [3, 2] alone: nothing of the first call is kept
    assert {k: v.tolist() for k, v in ens.member_scores().items()} == {"a": [3, 2]}
    assert not hasattr(ens, "reset") and not hasattr(ens, "pool")


def test_aggregate_is_combine_with_the_ensembles_weights_and_mode_over_the_given_set():
    ens = Ensemble([Table("a", [1, 2, 3, 6]), Table("b", [0, 0, 2, 2])], weights=[2.0, 1.0], mode="zscore")
    raw = {"b": torch.tensor([0.0, 0.0, 2.0, 2.0]), "a": torch.tensor([1.0, 2.0, 3.0, 6.0])}  # any key order
    za = [(v - 3.0) / math.sqrt(3.5) for v in (1.0, 2.0, 3.0, 6.0)]
    expected = torch.tensor([(2 * x + y) / 3 for x, y in zip(za, [-1.0, -1.0, 1.0, 1.0])])
    assert torch.allclose(ens.aggregate(raw), expected)
    assert torch.equal(ens.aggregate(raw), combine({"a": raw["a"], "b": raw["b"]}, weights=[2.0, 1.0], mode="zscore"))
    # the example: over all four, candidates 0 and 2 tie at 5/6 (the search keeps the lower id)
    rank = Ensemble([Table("A", [0]), Table("B", [0])])
    out = rank.aggregate({"A": torch.tensor([7.0, 5.0, 9.0, 3.0]), "B": torch.tensor([8.0, 2.0, 4.0, 2.0])})
    assert torch.allclose(out, torch.tensor([5 / 6, 1 / 4, 5 / 6, 1 / 12]))
    assert out[0] == out[2]
    with pytest.raises(VerifierError, match=r"exactly its members \['a', 'b'\]"):
        ens.aggregate({"a": raw["a"]})


def test_each_member_is_called_once_per_chunk_and_batches_itself():
    a, b = Table("a", list(range(10)), batch_size=3), Table("b", list(range(10)), batch_size=16)
    ens = Ensemble([a, b])
    out = ens.score(images(list(range(10))))
    assert a.score_calls == 1 and b.score_calls == 1
    assert torch.allclose(out, torch.arange(10, dtype=torch.float32) / 9)


def test_duplicate_member_names_are_suffixed():
    assert unique_names(["clip_score", "clip_score", "aesthetic", "clip_score"]) == \
        ["clip_score", "clip_score_2", "aesthetic", "clip_score_3"]
    ens = Ensemble([Table("clip_score", [1, 2]), Table("clip_score", [2, 1])])
    ens.score(images([0, 1]))
    assert list(ens.member_scores()) == ["clip_score", "clip_score_2"]


def test_needs_union_reference_sigma_and_check():
    ens = Ensemble([Table("p", [0], needs={"prompt"}), Table("r", [0], needs={"reference"}, sigma=0.4)])
    assert ens.needs == {"prompt", "reference"} and ens.reference_sigma == 0.4
    with pytest.raises(VerifierError, match="'p' needs a prompt"):
        ens.score(images([0]), prompt=None, references=images([0]))
    with pytest.raises(VerifierError, match="'r' needs reference"):
        ens.score(images([0]), prompt="a cat")
    with pytest.raises(VerifierError, match="different sigmas"):
        Ensemble([Table("r", [0], needs={"reference"}, sigma=0.4), Table("s", [0], needs={"reference"}, sigma=0.2)])


def test_bad_weights_and_mode_are_rejected():
    members = [Table("a", [0]), Table("b", [0])]
    for weights, match in (([1.0], "2 members"), ([1.0, -1.0], ">= 0"), ([0.0, 0.0], "not all 0"),
                           ({"c": 1.0}, "unknown members")):
        with pytest.raises(VerifierError, match=match):
            Ensemble(members, weights=weights)
    with pytest.raises(VerifierError, match="rank, zscore"):
        Ensemble(members, mode="borda")
    with pytest.raises(VerifierError, match="at least one"):
        Ensemble([])
    with pytest.raises(VerifierError, match="one length"):
        combine({"a": torch.zeros(2), "b": torch.zeros(3)})


def test_to_and_release_apply_to_all_members():
    a, b = Table("a", [0, 1]), Table("b", [1, 0])
    ens = Ensemble([a, b])
    assert list(ens.model) == [a.model, b.model]
    ens.to(dtype=torch.float64)
    assert a.dtype == torch.float64 and b.dtype == torch.float64 and ens.dtype == torch.float64
    ens.model.to(torch.float32)  # a host moving the ensemble's module moves the members
    assert a.dtype == torch.float32
    ens.release()
    assert a.model is None and b.model is None and ens.model is None

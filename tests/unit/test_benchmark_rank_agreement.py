"""benchmarks/rank_agreement.py's statistics, checked against values worked out by hand."""

import math

import pytest

from noise_search.tests.helpers import bench_module


@pytest.fixture(scope="module")
def ra():
    return bench_module("rank_agreement")


def test_ranks_share_the_mean_rank_on_ties(ra):
    assert ra.ranks([0.3, 0.1, 0.3, 0.2]) == [3.5, 1.0, 3.5, 2.0]


def test_spearman_and_kendall_on_known_lists(ra):
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ra.spearman(a, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert ra.spearman(a, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # one adjacent swap: d^2 sum 2 -> rho = 1 - 6*2/(5*24) = 0.9; tau = (9 - 1)/10
    assert ra.spearman(a, [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert ra.kendall(a, [1, 3, 2, 4, 5]) == pytest.approx(0.8)
    # tau-b with a tie in b: pairs 6, concordant 5, tied-in-b 1 -> 5 / sqrt(6 * 5)
    assert ra.kendall([1, 2, 3, 4], [1, 2, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(ra.spearman(a, [1, 1, 1, 1, 1]))


def test_agreement_reports_winner_and_top_overlap(ra):
    full = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2]
    fast = [0.6, 0.2, 0.5, 0.8, 0.1, 0.3]
    row = ra.agreement(full, fast)
    assert row["same_winner"] is False  # 0 wins on full, 3 on fast
    assert row["top4_overlap"] == 0.75  # top 4: {0, 3, 2, 4} and {3, 0, 2, 5}
    assert ra.agreement(full, full) == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0),
                                        "same_winner": True, "top4_overlap": 1.0}

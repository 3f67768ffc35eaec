"""Metric values computed by hand, written as arithmetic."""

from __future__ import annotations

import math

import pytest

from metrics import (
    catalog_coverage,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

ACTUAL = [{"a", "b", "c"}, {"d"}]
PREDICTED = [["a", "x", "b"], ["y", "z", "d"]]


def test_map_by_hand():
    ap_1 = (1 / 1 + 2 / 3) / min(3, 3)
    ap_2 = (1 / 3) / min(3, 1)
    assert map_at_k(ACTUAL, PREDICTED, k=3) == pytest.approx((ap_1 + ap_2) / 2)


def test_map_divides_by_min_k_and_relevant():
    # 5 relevant, k=2, both hits: (1/1 + 2/2) / min(2, 5) = 1
    assert map_at_k([set("abcde")], [["a", "b"]], k=2) == pytest.approx(1.0)


def test_ndcg_by_hand():
    d = lambda rank: 1 / math.log2(rank + 1)  # noqa: E731
    u1 = (d(1) + d(3)) / (d(1) + d(2) + d(3))
    u2 = d(3) / d(1)
    assert ndcg_at_k(ACTUAL, PREDICTED, k=3) == pytest.approx((u1 + u2) / 2)


def test_ndcg_ideal_over_min_k_relevant():
    # 5 relevant, k=2, hits at ranks 1 and 2 -> ideal over 2 positions -> 1
    assert ndcg_at_k([set("abcde")], [["a", "b", "x"]], k=2) == pytest.approx(1.0)


def test_precision_recall_hit_mrr_by_hand():
    assert precision_at_k(ACTUAL, PREDICTED, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert recall_at_k(ACTUAL, PREDICTED, k=3) == pytest.approx((2 / 3 + 1 / 1) / 2)
    assert hit_rate_at_k(ACTUAL, PREDICTED, k=2) == pytest.approx((1 + 0) / 2)
    assert mrr_at_k(ACTUAL, PREDICTED, k=3) == pytest.approx((1 / 1 + 1 / 3) / 2)


def test_only_first_k_count():
    assert precision_at_k([{"c"}], [["a", "b", "c"]], k=2) == 0.0
    assert ndcg_at_k([{"c"}], [["a", "b", "c"]], k=2) == 0.0


def test_repeated_prediction_counts_once_at_first_rank():
    # [a, a, b]: the second a takes rank 2 but is no hit; b hits at rank 3.
    assert map_at_k([{"a", "b"}], [["a", "a", "b"]], k=3) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert precision_at_k([{"a"}], [["a", "a"]], k=2) == pytest.approx(1 / 2)


def test_users_without_relevant_items_are_left_out():
    assert map_at_k([{"a"}, set()], [["a"], ["b"]], k=1) == 1.0
    with pytest.raises(ValueError, match="no user has any relevant"):
        map_at_k([set()], [["a"]])


def test_mappings_missing_user_has_empty_list():
    actual = {"u1": {"a"}, "u2": {"b"}}
    predicted = {"u1": ["a"]}
    assert hit_rate_at_k(actual, predicted, k=1) == pytest.approx(1 / 2)


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match="aligned"):
        map_at_k([{"a"}], [["a"], ["b"]])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k([{"a"}], [["a"]], k=0)
    with pytest.raises(TypeError, match="mapping"):
        ndcg_at_k({"u": {"a"}}, [["a"]])


def test_catalog_coverage_by_hand():
    assert catalog_coverage([["a", "b"], ["a", "c"]], catalog_size=4, k=2) == pytest.approx(3 / 4)
    assert catalog_coverage([["a", "b"], ["a", "c"]], catalog_size=4, k=1) == pytest.approx(1 / 4)

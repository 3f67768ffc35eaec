"""Metric values computed by hand, written as arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.evaluate.metrics import (
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


# --- properties -----------------------------------------------------------------------------


ALL_METRICS = [map_at_k, ndcg_at_k, precision_at_k, recall_at_k, hit_rate_at_k, mrr_at_k]
items = st.integers(0, 30)
users = st.lists(
    st.tuples(st.sets(items, min_size=1, max_size=8), st.lists(items, max_size=15)), min_size=1, max_size=20
)


@settings(max_examples=200, deadline=None)
@given(users=users, k=st.integers(1, 12))
def test_every_metric_is_in_unit_interval(users, k):
    actual, predicted = [a for a, _ in users], [p for _, p in users]
    for f in ALL_METRICS:
        assert 0.0 <= f(actual, predicted, k) <= 1.0 + 1e-12


@settings(max_examples=200, deadline=None)
@given(users=st.lists(st.sets(items, min_size=1, max_size=8), min_size=1, max_size=20), k=st.integers(1, 12))
def test_a_perfect_ranking_scores_one(users, k):
    predicted = [sorted(a) for a in users]  # every relevant item first
    for f in (map_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k):
        assert f(users, predicted, k) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(users=users, k=st.integers(1, 12), data=st.data())
def test_the_order_of_actual_does_not_matter(users, k, data):
    actual = [list(a) for a, _ in users]
    shuffled = [data.draw(st.permutations(a)) for a in actual]
    predicted = [p for _, p in users]
    for f in ALL_METRICS:
        assert f(actual, predicted, k) == pytest.approx(f(shuffled, predicted, k))


# --- cross-check with implicit ----------------------------------------------------------------


def test_map_and_ndcg_equal_implicits_ranking_metrics_on_a_real_split():
    import scipy.sparse as sp
    from implicit.evaluation import ranking_metrics_at_k
    from threadpoolctl import threadpool_limits

    from streamrec.train.pipeline import TrainParams, fit_als

    rng = np.random.default_rng(7)
    n_users, n_items = 300, 120
    # Users have taste for one of 4 item blocks; 80% of their interactions stay in it.
    taste = rng.integers(0, 4, n_users)
    rows, cols = [], []
    for u in range(n_users):
        for _ in range(25):
            block = taste[u] if rng.random() < 0.8 else rng.integers(0, 4)
            rows.append(u)
            cols.append(block * 30 + rng.integers(0, 30))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    m.data[:] = 1.0
    mask = rng.random(m.nnz) < 0.8
    coo = m.tocoo()
    train = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=m.shape)
    test = sp.csr_matrix((coo.data[~mask], (coo.row[~mask], coo.col[~mask])), shape=m.shape)
    model = fit_als(train, TrainParams(factors=8, iterations=5))

    with threadpool_limits(1, "blas"):
        theirs = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
        users_with_test = np.flatnonzero(np.diff(test.indptr))
        ids, _ = model.recommend(users_with_test, train[users_with_test], N=10, filter_already_liked_items=True)
    actual = [set(test[u].indices.tolist()) for u in users_with_test]
    predicted = ids.tolist()
    assert theirs["map"] > 0.05 and theirs["ndcg"] > 0.05  # a real comparison, not 0 == 0
    assert map_at_k(actual, predicted, 10) == pytest.approx(theirs["map"], rel=1e-6)
    assert ndcg_at_k(actual, predicted, 10) == pytest.approx(theirs["ndcg"], rel=1e-6)


def test_per_user_values_average_to_the_metric():
    from streamrec.evaluate.metrics import hit_per_user, hit_rate_at_k, ndcg_per_user

    actual = [{"a", "b"}, set(), {"c"}, {"d"}]
    predicted = [["x", "a", "b"], ["a"], ["c"], ["x"]]
    per_user = ndcg_per_user(actual, predicted, 3)
    assert len(per_user) == 3  # the user with nothing relevant is left out, as in the mean
    assert per_user.mean() == pytest.approx(ndcg_at_k(actual, predicted, 3))
    assert per_user[1] == 1.0 and per_user[2] == 0.0
    assert hit_per_user(actual, predicted, 1).tolist() == [0.0, 1.0, 0.0]
    assert hit_per_user(actual, predicted, 3).mean() == pytest.approx(hit_rate_at_k(actual, predicted, 3))


def test_paired_bootstrap_separates_a_real_gap_from_noise():
    from streamrec.evaluate.metrics import mean_interval, paired_bootstrap

    rng = np.random.default_rng(7)
    base = rng.random(4000)
    better = base + 0.02 + rng.normal(0, 0.05, 4000)  # 2 points better, per user, with noise
    same = base + rng.normal(0, 0.05, 4000)  # no better at all
    gap = paired_bootstrap(better, base)
    assert gap["difference"] == pytest.approx(better.mean() - base.mean())
    assert 0 < gap["difference_low"] < 0.02 < gap["difference_high"] < 0.03
    assert gap["ratio_low"] > 1.0
    noise = paired_bootstrap(same, base)
    assert noise["difference_low"] < 0 < noise["difference_high"]
    # Paired is sharper than comparing the two means' own intervals: the users' spread cancels.
    low_a, high_a = mean_interval(better)
    assert gap["difference_high"] - gap["difference_low"] < 0.5 * (high_a - low_a)
    assert paired_bootstrap(better, base, seed=3)["difference_low"] == pytest.approx(gap["difference_low"], abs=2e-3)


def test_paired_bootstrap_refuses_unaligned_values():
    from streamrec.evaluate.metrics import paired_bootstrap

    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([], [])

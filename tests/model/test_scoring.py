"""The trained model: what it recommends on obvious data."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.model_file import load_model
from streamrec.model.recommender import LIST_LENGTH
from streamrec.model.scoring import rank, recommend_for
from tests.helpers import GROUP_A, GROUP_B


@pytest.fixture(scope="module")
def model(block_model_path):
    return load_model(block_model_path)


def group_of(uid: str) -> list[str]:
    return GROUP_A if int(uid) <= 30 else GROUP_B


def watched_by(model, uid: str) -> set[str]:
    return set(model.streamers.ids[model.history(model.users.get(uid))[0]])


@pytest.mark.parametrize("uid", ["1", "17", "31", "60"])
def test_discovery_stays_inside_the_users_audience(model, uid):
    unwatched_in_group = set(group_of(uid)) - watched_by(model, uid)
    assert len(unwatched_in_group) >= 3
    source, items = recommend_for(model, uid, k=len(unwatched_in_group), exclude_watched=True)
    assert source == "personal"
    assert {name for name, _ in items} == unwatched_in_group


@pytest.mark.parametrize("uid", ["2", "45"])
def test_default_ranking_puts_own_history_first(model, uid):
    watched = watched_by(model, uid)
    _, items = recommend_for(model, uid, k=len(watched))
    assert {name for name, _ in items} == watched


def test_lists_are_distinct_sorted_and_as_long_as_possible(model):
    for k in (1, 5, 12, 100):
        _, items = recommend_for(model, "3", k=k)
        names, scores = [n for n, _ in items], [s for _, s in items]
        assert len(names) == min(k, model.n_streamers) == len(set(names))
        assert scores == sorted(scores, reverse=True)
    _, items = recommend_for(model, "3", k=100, exclude_watched=True)
    assert len(items) == model.n_streamers - len(watched_by(model, "3"))


def test_unknown_user_gets_popular(model):
    source, items = recommend_for(model, "nobody", k=4)
    assert source == "popular"
    assert len(items) == 4
    assert [s for _, s in items] == sorted((s for _, s in items), reverse=True)


@pytest.fixture(scope="module")
def wide_model():
    """A model whose catalog is longer than the stored lists."""
    from streamrec.data import demo as demo_data
    from streamrec.data.sessions import INTEGER, Sessions
    from streamrec.train.pipeline import TrainParams, train

    frame = demo_data.generate(n_users=400, seed=5)
    sessions = Sessions(frame, "demo", "header", INTEGER, len(frame))
    model = train(sessions, TrainParams(factors=8, iterations=5))
    assert len(model.catalog) > 2 * LIST_LENGTH
    return model


def test_longer_than_the_stored_list_is_ranked_on_request_the_same_way(wide_model):
    model = wide_model
    for exclude in (False, True):
        ids, scores = model.lists["new" if exclude else "all"]
        for row in range(0, model.n_users, 37):
            stored = ids[row]
            assert (stored >= 0).all()  # full: the catalog is longer
            rows, _ = rank(model, row, LIST_LENGTH, exclude, among=model.catalog_candidates)
            assert rows.tolist() == stored.tolist()
            longer, longer_scores = rank(model, row, 3 * LIST_LENGTH, exclude)
            assert len(longer) == len(set(longer.tolist())) == 3 * LIST_LENGTH
            assert longer[:LIST_LENGTH].tolist() == stored.tolist()
            assert (np.diff(longer_scores) <= 1e-6).all()
            if exclude:
                assert not set(longer.tolist()) & set(model.history(row)[0].tolist())


@pytest.mark.parametrize("stored", [True, False], ids=["own scores stored", "own scores computed"])
def test_a_filtered_ranking_is_the_full_ranking_of_the_streamers_that_pass(wide_model, stored):
    from dataclasses import replace

    from streamrec.serve.live import LiveSet, LiveStream

    model = wide_model if stored else replace(wide_model, own_scores={})  # as a Spark-trained file
    assert bool(model.own_scores) == stored
    rng = np.random.default_rng(4)
    live = LiveSet.build(
        model, [LiveStream(n) for n in model.streamers.ids[rng.choice(model.catalog, len(model.catalog) // 2)]]
    )
    outside = np.setdiff1d(np.arange(model.n_streamers), model.catalog)
    assert any(np.isin(model.history(row)[0], outside).any() for row in range(model.n_users))
    for share in (0.05, 0.3, 0.8):
        passes = rng.random(model.n_streamers) < share
        in_catalog = model.candidates(model.catalog[passes[model.catalog]])
        live_now = model.candidates(live.rows[passes[live.rows]])
        for row in range(0, model.n_users, 7):
            for exclude in (False, True):
                # The catalog and the viewer's own streamers, every one ranked, then filtered.
                full, full_scores = rank(model, row, model.n_streamers, exclude, among=model.catalog_candidates)
                got, got_scores = rank(model, row, 10, exclude, among=in_catalog, passes=passes)
                assert got.tolist() == full[passes[full]][:10].tolist()
                np.testing.assert_allclose(got_scores, full_scores[passes[full]][:10], rtol=1e-5, atol=1e-5)
                full, _ = rank(model, row, model.n_streamers, exclude, among=live.candidates, live=True)
                got, _ = rank(model, row, 10, exclude, among=live_now, passes=passes, live=True)
                assert got.tolist() == full[passes[full]][:10].tolist()


def test_split_ranker_scores_watched_and_new_pairs_as_fitted():
    from streamrec.model.ranking import FEATURES, SPLIT, RankerWeights, fit_logistic, fit_logistic_split

    rng = np.random.default_rng(3)
    x = rng.random((400, len(FEATURES)))
    x[::2, 0] = 0.0  # half never watched
    x[1::2, 0] = 1.0
    y = (rng.random(400) < 0.3).astype(float)
    split = np.concatenate([x, x[:, list(SPLIT)] * (x[:, :1] == 0)], axis=1)  # written out here
    fitted = fit_logistic(split, y)
    ranker = fit_logistic_split(x, y)
    c, w = ranker.linear()
    watched = x[:, 0] == 1
    served = c + x @ w + np.where(watched, x @ ranker.watched_shift, 0.0)
    np.testing.assert_allclose(served, fitted.score(split), rtol=1e-9, atol=1e-9)
    assert np.abs(ranker.watched_shift).sum() > 0  # watched pairs really weigh differently
    again = RankerWeights.from_dict(ranker.to_dict())
    np.testing.assert_array_equal(again.watched_shift, ranker.watched_shift)


def test_trained_model_has_a_live_ranker_and_ranks_live_lists_by_it(wide_model):
    from streamrec.serve.live import LiveSet

    model = wide_model
    assert {"all", "new", "live"} <= set(model.rankers)
    assert model.live_ranker == "live" and model.rankers["live"].watched_shift is not None
    live = LiveSet.build(model, list(model.streamers.ids[model.catalog[:40]]))
    for row in range(0, model.n_users, 23):
        ahead, _ = rank(model, row, 10, False, among=live.candidates, live=True, lists=live.lists)
        now, _ = rank(model, row, 10, among=live.candidates, live=True)
        assert ahead.tolist() == now.tolist() and set(ahead.tolist()) <= set(live.rows.tolist())

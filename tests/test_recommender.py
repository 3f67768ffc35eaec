"""The trained model: what it recommends on obvious data."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import GROUP_A, GROUP_B
from model_file import load_model
from recommender import LIST_LENGTH


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
    source, items = model.recommend_for(uid, k=len(unwatched_in_group), exclude_watched=True)
    assert source == "personal"
    assert {name for name, _ in items} == unwatched_in_group


@pytest.mark.parametrize("uid", ["2", "45"])
def test_default_ranking_puts_own_history_first(model, uid):
    watched = watched_by(model, uid)
    _, items = model.recommend_for(uid, k=len(watched))
    assert {name for name, _ in items} == watched


def test_lists_are_distinct_sorted_and_as_long_as_possible(model):
    for k in (1, 5, 12, 100):
        _, items = model.recommend_for("3", k=k)
        names, scores = [n for n, _ in items], [s for _, s in items]
        assert len(names) == min(k, model.n_streamers) == len(set(names))
        assert scores == sorted(scores, reverse=True)
    _, items = model.recommend_for("3", k=100, exclude_watched=True)
    assert len(items) == model.n_streamers - len(watched_by(model, "3"))


def test_unknown_user_gets_popular(model):
    source, items = model.recommend_for("nobody", k=4)
    assert source == "popular"
    assert len(items) == 4
    assert [s for _, s in items] == sorted((s for _, s in items), reverse=True)


@pytest.fixture(scope="module")
def wide_model():
    """A model whose catalog is longer than the stored lists."""
    import demo_data
    from sessions import INTEGER, Sessions
    from training import TrainParams, train

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
            rows, _ = model.rank_known(row, LIST_LENGTH, exclude)
            assert rows.tolist() == stored.tolist()
            longer, longer_scores = model.recommend(row, 3 * LIST_LENGTH, exclude)
            assert len(longer) == len(set(longer.tolist())) == 3 * LIST_LENGTH
            assert longer[:LIST_LENGTH].tolist() == stored.tolist()
            assert (np.diff(longer_scores) <= 1e-6).all()
            if exclude:
                assert not set(longer.tolist()) & set(model.history(row)[0].tolist())

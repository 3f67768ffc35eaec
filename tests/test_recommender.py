"""The trained model: what it recommends on obvious data, and its file on disk."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from conftest import GROUP_A, GROUP_B, Exploit
from recommender import FORMAT, FORMAT_VERSION, ModelError, check_writable, load_model, save_model


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


def test_round_trip_keeps_everything(model, tmp_path):
    path = tmp_path / "copy.pkl"
    save_model(model, path)
    again = load_model(path)
    assert again.metadata == model.metadata
    np.testing.assert_array_equal(again.als.user_factors, model.als.user_factors)
    assert again.recommend_for("5", k=5) == model.recommend_for("5", k=5)


def test_tampered_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "x": Exploit(marker)}))
    with pytest.raises(ModelError, match="not a trusted model file"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated or not a model file"),
        (b"hello, not a pickle", "truncated or not a model file"),
        (pickle.dumps({"some": "dict"}), "not a model file of this service"),
        (pickle.dumps({"format": FORMAT, "format_version": 999}), "format version 999"),
    ],
)
def test_broken_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "m.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "python als_fit.py" in str(info.value)


def test_truncated_real_model_is_refused(block_model_path, tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(block_model_path.read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated"):
        load_model(path)


def test_missing_model_names_path_and_fix(tmp_path):
    with pytest.raises(ModelError, match=r"no model file at .*nope\.pkl; train one with: python als_fit\.py"):
        load_model(tmp_path / "nope.pkl")


def test_failed_save_leaves_previous_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.pkl"
    save_model(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", boom)
    with pytest.raises(OSError):
        save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pkl"]  # no temp file left behind


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "m.pkl")
    with pytest.raises(ModelError, match="found a directory"):
        check_writable(tmp_path)

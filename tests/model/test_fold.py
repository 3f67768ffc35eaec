"""A viewer's sessions not yet in the model, folded into their history on request, give the history
terms the next update gives them: the request after an event ranks as the model after the update
would, but for ALS and popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.data.sessions import END, INTEGER, START, STREAMER, UID, Sessions
from streamrec.model.model_file import load_model
from streamrec.model.ranking import RankerName
from streamrec.model.scoring import fold_sessions, rank
from streamrec.train.update import update


@pytest.fixture(scope="module")
def model(block_model_path):
    return load_model(block_model_path)


def sessions_for(by_viewer: dict[str, list[tuple[str, int, int]]]) -> Sessions:
    """Each viewer's (streamer_name, start, end) sessions as a read log."""
    rows = [(uid, *session) for uid, sessions in by_viewer.items() for session in sessions]
    frame = pd.DataFrame(
        {
            UID: pd.Categorical([r[0] for r in rows]),
            STREAMER: pd.Categorical([r[1] for r in rows]),
            START: np.array([r[2] for r in rows], np.int64),
            END: np.array([r[3] for r in rows], np.int64),
        }
    )
    return Sessions(frame, "test", "header", INTEGER, len(frame))


def test_folded_history_terms_are_the_next_updates(model):
    t = model.time_max
    new = {}
    for uid in ("1", "2", "31"):
        row = model.users.get(uid)
        watched = [model.streamers.name(r) for r in model.history(row)[0]]
        others = [n for n in model.streamers.ids if n not in watched]  # never watched by the viewer
        if uid == "1":  # a repeat and a new streamer twice
            new[uid] = [(watched[0], t + 1, t + 4), (others[0], t + 2, t + 6), (others[0], t + 7, t + 9)]
        elif uid == "2":  # more than RECENT_SESSIONS, out of order, two new streamers
            names = [watched[0], others[0], watched[-1], others[1]]
            new[uid] = [(names[i % 4], t + 30 - 2 * i, t + 31 - 2 * i) for i in range(13)]
        else:  # one the model has already (left out), one new
            last = int(model.last_seen.data[model.history(row)[1]][0])
            new[uid] = [(watched[0], last - 1, last), (others[-1], t + 3, t + 3)]
    updated, skipped = update(model, sessions_for(new))
    assert skipped == 1  # viewer 31's session the model has, which fold_sessions leaves out too
    for uid, sessions in new.items():
        folded = fold_sessions(model, model.users.get(uid), sessions, newest=t + 31)
        assert folded is not None
        rows, entries = updated.history(updated.users.get(uid))
        assert np.array_equal(folded.rows, rows), uid  # the new streamers became watched ones
        assert np.allclose(folded.bonus, updated.history_bonus[entries], rtol=1e-5, atol=1e-5), uid
        if updated.live_ranker != RankerName.ALL:
            assert np.allclose(folded.live_bonus, updated.live_bonus[entries], atol=1e-5), uid


def test_a_session_the_model_has_is_not_folded_in_again(model):
    row = model.users.get("1")
    streamers, entries = model.history(row)
    last = int(model.last_seen.data[entries][0])
    assert fold_sessions(model, row, [(model.streamers.name(streamers[0]), last - 1, last)], newest=last) is None
    assert fold_sessions(model, row, [("no such streamer", 1, 2)], newest=last) is None


def test_a_newly_watched_streamer_ranks_as_watched_and_leaves_discovery(model):
    row = model.users.get("1")
    watched = {model.streamers.name(r) for r in model.history(row)[0]}
    other = next(n for n in model.streamers.ids if n not in watched)
    t = model.time_max
    folded = fold_sessions(model, row, [(other, t + i, t + i + 2) for i in range(0, 30, 3)], newest=t + 32)
    other_row = model.streamers.get(other)
    before, _ = rank(model, row, k=model.n_streamers)
    after, _ = rank(model, row, k=model.n_streamers, folded=folded)
    assert list(after).index(other_row) < list(before).index(other_row)
    assert after[0] == other_row  # ten sessions just now: first
    discovery, _ = rank(model, row, k=model.n_streamers, exclude_watched=True, folded=folded)
    assert other_row not in discovery
    assert other_row in rank(model, row, k=model.n_streamers, exclude_watched=True)[0]


@pytest.mark.parametrize("which", ["block", "demo"])
def test_a_folded_list_from_the_stored_one_is_the_one_ranked_on_request(which, model, demo_size_model):
    """Viewers with some sessions folded in: the list merged from the stored one (when it can be
    exact) is the list ranked on request over the whole catalog. The block model's lists hold
    every candidate; the demo model's are full (30 of 2,000 and more)."""
    from streamrec.model.scoring import rank_folded_list

    model = model if which == "block" else load_model(demo_size_model)
    rng = np.random.default_rng(0)
    t = model.time_max
    merged = tried = 0
    for row in rng.choice(model.n_users, size=min(model.n_users, 150), replace=False).tolist():
        popular = model.popular_ranking[: 50 if which == "demo" else model.n_streamers]
        streamers = rng.choice(popular, size=rng.integers(1, 4))
        own = model.history(row)[0]
        if which == "demo" and len(own):
            streamers = np.append(streamers, rng.choice(own))  # repeat sessions too
        sessions = [(model.streamers.name(int(s)), t + i, t + i + 2) for i, s in enumerate(streamers)]
        folded = fold_sessions(model, row, sessions, newest=t + 5)
        for exclude in (False, True):
            for k in (1, 5, 12, 30):
                tried += 1
                fast = rank_folded_list(model, row, folded, k, exclude)
                if fast is None:
                    continue
                merged += 1
                slow = rank(model, row, k, exclude, folded=folded)
                np.testing.assert_array_equal(fast[0], slow[0])
                np.testing.assert_allclose(fast[1], slow[1], rtol=1e-5, atol=1e-6)
    assert merged > tried // 2  # the merge answered most of them


def test_a_filter_over_a_folded_history_keeps_the_unfiltered_order(demo_size_model):
    """A filtered list of a viewer with sessions folded in is the unfiltered list with the
    streamers that fail the filter taken out: the same order and scores, own streamers (old and
    newly watched) in it or left out as without a filter."""
    model = load_model(demo_size_model)
    rng = np.random.default_rng(5)
    t = model.time_max
    for row in rng.choice(model.n_users, size=40, replace=False).tolist():
        own = model.history(row)[0]
        streamers = np.append(rng.choice(model.popular_ranking[:30], size=3), rng.choice(own, size=min(len(own), 2)))
        sessions = [(model.streamers.name(int(s)), t + i, t + i + 2) for i, s in enumerate(streamers)]
        folded = fold_sessions(model, row, sessions, newest=t + 9)
        assert folded is not None
        passes = rng.random(model.n_streamers) < 0.3
        passes[folded.rows[:2]] = True  # some of their own pass
        among = model.candidates(model.catalog[passes[model.catalog]])
        for exclude in (False, True):
            everything, all_scores = rank(model, row, model.n_streamers, exclude, folded=folded)
            ranked = model.in_catalog[everything] | np.isin(everything, folded.rows)  # not the popular top-up
            kept = passes[everything] & ranked
            rows, scores = rank(model, row, model.n_streamers, exclude, among=among, passes=passes, folded=folded)
            np.testing.assert_array_equal(rows, everything[kept])
            np.testing.assert_allclose(
                scores, all_scores[kept], rtol=1e-5, atol=1e-6
            )  # a product over fewer rows rounds apart
            assert exclude or np.isin(folded.rows[:2], rows).all()


def test_a_merged_list_is_exact_only_when_its_last_score_reaches_the_stored_lists():
    """ranking.merge_stored, which both a request with held sessions and the update use: a viewer
    whose own streamer (7) drops below the stored list's last score may have a never-watched
    streamer off the list above it, so the merge is inexact; one whose own streamers stay above it
    is exact, ties keeping the stored order; a list not full is always exact."""
    from streamrec.model.ranking import merge_stored

    ids = np.array([[7, 3, 5, 9], [7, 3, 5, 9], [7, 3, -1, -1]])
    scores = np.array([[4.0, 3.0, 2.0, 1.0]] * 2 + [[4.0, 3.0, -np.inf, -np.inf]], dtype=np.float32)
    rows = np.array([0, 1, 2])
    own = np.array([7, 7, 7])
    own_scores = np.array([0.5, 2.0, 0.5], dtype=np.float32)
    merged, merged_scores, exact = merge_stored(ids, scores, rows, own, own_scores, 4)
    assert exact.tolist() == [False, True, True]
    np.testing.assert_array_equal(merged[1], [3, 5, 7, 9])  # 7 ties with 5: the stored one first
    np.testing.assert_array_equal(merged[2], [3, 7, -1, -1])
    np.testing.assert_array_equal(merged_scores[2][:2], [3.0, 0.5])
    for row in range(3):  # one viewer at a time (a request) as in a batch (the update)
        one = merge_stored(
            ids[row : row + 1],
            scores[row : row + 1],
            np.zeros(1, int),
            own[row : row + 1],
            own_scores[row : row + 1],
            4,
        )
        np.testing.assert_array_equal(one[0][0], merged[row])
        np.testing.assert_array_equal(one[1][0], merged_scores[row])
        assert one[2][0] == exact[row]


def test_a_request_merges_as_the_update_does():
    """merge_stored's one-viewer path (a request) gives what its batch path (the update) gives,
    row by row, on random lists with ties, short lists and own streamers on and off them."""
    from streamrec.model.ranking import merge_stored

    rng = np.random.default_rng(3)
    width, n_rows = 6, 40
    ids = np.full((n_rows, width), -1, dtype=np.int64)
    scores = np.full((n_rows, width), -np.inf, dtype=np.float32)
    rows, own, own_scores = [], [], []
    for r in range(n_rows):
        n = width if rng.random() < 0.7 else int(rng.integers(1, width))
        ids[r, :n] = rng.choice(20, n, replace=False)
        scores[r, :n] = -np.sort(-rng.integers(0, 5, n)).astype(np.float32)  # few values: ties
        mine = np.sort(rng.choice(np.union1d(ids[r, :2], rng.choice(20, 3)), int(rng.integers(1, 4)), replace=False))
        rows += [r] * len(mine)
        own += mine.tolist()
        own_scores += rng.integers(-2, 5, len(mine)).astype(np.float32).tolist()  # some drop off the list
    rows, own, own_scores = np.array(rows), np.array(own), np.array(own_scores, dtype=np.float32)
    batch = merge_stored(ids, scores, rows, own, own_scores, width)
    assert 0 < batch[2].sum() < n_rows  # exact and inexact rows both
    for r in range(n_rows):
        mine = rows == r
        one = merge_stored(
            ids[r : r + 1], scores[r : r + 1], np.zeros(mine.sum(), int), own[mine], own_scores[mine], width
        )
        np.testing.assert_array_equal(one[0][0], batch[0][r])
        np.testing.assert_array_equal(one[1][0], batch[1][r])
        assert one[2][0] == batch[2][r]

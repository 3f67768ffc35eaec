"""Aggregating sessions into the users x streamers matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.data.interactions import IdMap, aggregate
from streamrec.data.sessions import INTEGER

FRAME = pd.DataFrame(
    {
        "uid": ["42", "42", "42", "7"],
        "session_id": ["1", "2", "3", "4"],
        "streamer_name": ["alice", "alice", "bob", "bob"],
        "time_start": [0, 10, 4, 6],
        "time_end": [2, 10, 5, 9],
    }
)


def test_pairs_are_aggregated_with_explicit_orientation():
    inter = aggregate(FRAME, INTEGER)
    assert inter.shape == (2, 2)  # users x streamers
    u, a, b = inter.users.get("42"), inter.streamers.get("alice"), inter.streamers.get("bob")
    assert inter.count[u, a] == 2
    # integer times count inclusive rounds: (2 - 0 + 1) + (10 - 10 + 1)
    assert inter.watch_time[u, a] == 3 + 1
    assert inter.last_seen[u, a] == 10
    assert inter.count[inter.users.get("7"), b] == 1
    assert inter.nnz == 3
    assert (inter.time_min, inter.time_max) == (0, 10)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sessions", 2.0),
        ("log_sessions", np.log1p(2.0)),
        ("watch_time", 4.0),
        ("log_watch_time", np.log1p(4.0)),
        ("binary", 1.0),
    ],
)
def test_strengths(kind, expected):
    inter = aggregate(FRAME, INTEGER)
    m = inter.strength(kind)
    assert m.dtype == np.float32
    assert m[inter.users.get("42"), inter.streamers.get("alice")] == pytest.approx(expected)


def test_unknown_strength_is_named():
    with pytest.raises(ValueError, match="strength must be one of"):
        aggregate(FRAME, INTEGER).strength("likes")


def test_aligned_aggregation_drops_unknown_ids():
    users, streamers = IdMap.from_ids(["7"]), IdMap.from_ids(["bob", "carol"])
    inter = aggregate(FRAME, INTEGER, users=users, streamers=streamers)
    assert inter.shape == (1, 2)
    assert inter.count.toarray().tolist() == [[1.0, 0.0]]


def test_id_map_is_string_keyed():
    ids = IdMap.from_ids(["42", "abc"])
    assert ids.get("42") == 0
    assert ids.get(42) is None  # ids are strings: the URL's "42", not the int
    assert ids.rows([42, "abc", "zzz"]).tolist() == [0, 1, -1]


def test_momentum_counts_last_sessions_and_decays_with_age():
    from streamrec.data.interactions import DECAY_SCALE, RECENT_SESSIONS
    from streamrec.data.sessions import COLUMNS

    # viewer 3: 14 sessions, "x" in the first 5 and "y" in the last 9 (the last 10 hold one "x")
    rows = [(3, i, "x" if i < 5 else "y", 2 * i, 2 * i) for i in range(14)] + [(1, 99, "x", 0, 0)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for shuffled in (frame, frame.sample(frac=1.0, random_state=4)):  # in viewer-time order or not
        inter = aggregate(shuffled, INTEGER)
        three, x, y = inter.users.get("3"), inter.streamers.get("x"), inter.streamers.get("y")
        assert RECENT_SESSIONS == 10
        assert inter.recent[three, x] == 1 and inter.recent[three, y] == 9
        assert inter.recent[inter.users.get("1"), x] == 1
        span = 26  # time_max 26 - time_min 0
        ages = [26 - 2 * i for i in range(5, 14)]
        expected = sum(np.exp(-a / (DECAY_SCALE * span)) for a in ages)
        assert inter.decayed[three, y] == pytest.approx(expected, rel=1e-5)
        assert inter.decayed[three, x] < 0.01 < inter.decayed[three, y]

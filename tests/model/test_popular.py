"""The popularity recommender on its own."""

from __future__ import annotations

import pandas as pd
import pytest

from cold_start import main
from streamrec.data.sessions import INTEGER
from streamrec.model.popular import PopularityRecommender

# bob: 3 sessions by one viewer; alice: 2 viewers; carol: 1 viewer, long and recent.
FRAME = pd.DataFrame(
    {
        "uid": ["1", "1", "1", "2", "3", "4"],
        "session_id": ["s"] * 6,
        "streamer_name": ["bob", "bob", "bob", "alice", "alice", "carol"],
        "time_start": [0, 1, 2, 3, 4, 95],
        "time_end": [0, 1, 2, 3, 4, 100],
    }
)


def test_distinct_viewers_beat_one_binge_watcher():
    pop = PopularityRecommender("viewers").fit(FRAME, INTEGER)
    assert [name for name, _ in pop.recommend_names(3)] == ["alice", "bob", "carol"]


def test_by_sessions_and_watch_time():
    assert PopularityRecommender("sessions").fit(FRAME, INTEGER).recommend_names(1) == [("bob", 3.0)]
    assert PopularityRecommender("watch_time").fit(FRAME, INTEGER).recommend_names(1) == [("carol", 6.0)]


def test_recent_window_forgets_the_past():
    pop = PopularityRecommender("viewers", window=0.1).fit(FRAME, INTEGER)
    assert pop.recommend_names(1) == [("carol", 1.0)]


def test_exclude_skips_rows():
    pop = PopularityRecommender("viewers").fit(FRAME, INTEGER)
    rows, _ = pop.recommend(2, exclude=pop.ranking[:1])
    assert rows.tolist() == pop.ranking[1:3].tolist()


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="by must be one of"):
        PopularityRecommender("likes")
    with pytest.raises(ValueError, match="window must be"):
        PopularityRecommender(window=0)


def test_cli_prints_the_ranking(tmp_path, capsys):
    path = tmp_path / "s.csv"
    FRAME.to_csv(path, index=False)
    assert main([str(path), "-k", "2"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:3] == ["1", "alice", "2"]

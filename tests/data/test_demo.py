"""The demo generator at the public file's size has the real file's shape (demo_data.TWITCH_100K)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.data import demo as demo_data
from streamrec.data.sessions import COLUMNS

REAL = demo_data.TWITCH_100K


@pytest.fixture(scope="module")
def twitch_sized():
    frame = demo_data.generate(100_000, seed=42)
    return frame, demo_data.summary(frame)


def test_streamer_curve_matches_the_real_one_at_every_decile_and_the_top_one_percent(twitch_sized):
    _, got = twitch_sized
    shares = ["top_0.1%_share", "top_1%_share"] + [f"top_{d}%_share" for d in range(10, 100, 10)]
    for key in shares:
        assert got[key] == pytest.approx(REAL[key], rel=0.03), key
    assert got["one_viewer_share"] == pytest.approx(REAL["one_viewer_share"], abs=0.01)
    assert got["streamers"] == pytest.approx(REAL["streamers"], rel=0.05)
    assert got["pairs"] == pytest.approx(REAL["pairs"], rel=0.05)


def test_sessions_per_viewer_match_the_real_curve(twitch_sized):
    frame, got = twitch_sized
    for key in [f"sessions_p{d}" for d in range(10, 100, 10)] + ["sessions_p99"]:
        assert got[key] == pytest.approx(REAL[key], rel=0.05), key
    assert got["sessions_top_1%_share"] == pytest.approx(REAL["sessions_top_1%_share"], abs=0.005)
    assert got["sessions"] == pytest.approx(REAL["sessions"], rel=0.03)
    per_user = frame[COLUMNS[0]].value_counts()
    assert per_user.min() >= 5 and per_user.max() <= 327


def test_half_the_sessions_are_repeats_and_most_late_pairs(twitch_sized):
    _, got = twitch_sized
    assert abs(got["repeat_share"] - REAL["repeat_share"]) <= 0.02
    assert abs(got["test_pairs_repeat_share"] - REAL["test_pairs_repeat_share"]) <= 0.03
    # the first session after the split repeats more often than on Twitch (0.73 against 0.67)
    assert 0.6 <= got["next_session_repeat_share"] <= 0.8


def test_what_was_realistic_stays(twitch_sized):
    frame, _ = twitch_sized
    start, end = frame[COLUMNS[3]].to_numpy(), frame[COLUMNS[4]].to_numpy()
    length = end - start + 1
    assert np.median(length) == 1 and 2.5 <= length.mean() <= 3.6  # real: median 1, mean 3.1
    assert start.min() >= 0 and end.max() < demo_data.DAYS * demo_data.STEPS_PER_DAY
    hourly = np.bincount((start % demo_data.STEPS_PER_DAY) // 6, minlength=24)
    assert 1.6 <= hourly.max() / hourly.min() <= 3.5  # a daily cycle (real: about 2.2x)


def test_summary_of_a_known_log():
    import pandas as pd

    frame = pd.DataFrame(
        [(1, 10, "a", 0, 0), (1, 11, "a", 5, 6), (1, 12, "b", 9, 9), (2, 13, "a", 1, 1)], columns=COLUMNS
    )
    got = demo_data.summary(frame)
    assert got["pairs"] == 3 and got["streamers"] == 2 and got["repeat_share"] == 0.25
    assert got["one_viewer_share"] == 0.5 and got["top_1%_share"] == pytest.approx(2 / 3, abs=1e-3)
    assert got["largest_audience"] == 2


def test_same_seed_same_log():
    a, b = demo_data.generate(500, seed=3), demo_data.generate(500, seed=3)
    assert a.equals(b)
    assert not a.equals(demo_data.generate(500, seed=4))


def test_the_demo_catalog_names_every_streamer_and_follows_its_community(tmp_path):
    frame, names, community = demo_data._generate(n_users=600, seed=3)
    catalog = demo_data.streamer_catalog(frame, names, community, seed=3)
    assert sorted(catalog["streamer_name"]) == sorted(frame["streamer_name"].unique())
    assert set(catalog["category"]) <= set(demo_data.CATEGORIES)
    assert set(catalog["language"]) <= set(demo_data.LANGUAGES)
    same = dict(zip(names, community, strict=True))
    # A community is one category and one language.
    per_community = catalog.assign(c=catalog["streamer_name"].map(same)).groupby("c")[["category", "language"]]
    assert (per_community.nunique() == 1).all().all()
    again, again_catalog = demo_data.generate_with_catalog(n_users=600, seed=3)
    assert catalog.equals(again_catalog) and frame.equals(again) and frame.equals(demo_data.generate(600, seed=3))
    path, _ = demo_data.resolve(None, tmp_path / "demo_sessions.csv")
    assert (
        demo_data.catalog_path(path) == tmp_path / "demo_streamers.csv" and (tmp_path / "demo_streamers.csv").is_file()
    )
    assert demo_data.catalog_path(tmp_path / "demo.csv") == tmp_path / "demo_streamers.csv"

"""Popularity: the list for viewers the model does not know, and the top-up for short lists.

    python cold_start.py data/demo_sessions.csv --by viewers --window 0.25 -k 10

Popularity is measured over a recent window of the log, as a fraction of its time span (the unit
of integer times is unknown to us, a fraction is not), by one of
- `viewers`: distinct viewers (robust: one binge-watcher does not make a streamer popular);
- `sessions`: number of sessions;
- `watch_time`: summed session length.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.data.interactions import IdMap, session_lengths
from streamrec.data.sessions import START, STREAMER, UID

POPULARITY_BY = ("viewers", "sessions", "watch_time")


def _codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, distinct values): a categorical's own codes, else factorised."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.int64), np.asarray(column.cat.categories, dtype=object)
    codes, uniques = pd.factorize(column, sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


class PopularityRecommender:
    """Streamers ranked by popularity over a recent window; usable on its own."""

    def __init__(self, by: str = "viewers", window: float = 1.0):
        if by not in POPULARITY_BY:
            raise ValueError(f"by must be one of {', '.join(POPULARITY_BY)}; got {by!r}")
        if not 0.0 < window <= 1.0:
            raise ValueError(f"window must be a fraction of the time span in (0, 1]; got {window}")
        self.by = by
        self.window = window
        self.ranking = np.empty(0, dtype=np.int64)  # streamer rows, most popular first
        self.scores = np.empty(0, dtype=np.float32)  # aligned with ranking
        self.streamers: IdMap | None = None

    def fit(self, frame: pd.DataFrame, time_format: str, streamers: IdMap | None = None) -> PopularityRecommender:
        """Rank the streamers of `streamers` (default: those of `frame`) by popularity."""
        start = frame[START].to_numpy()
        lo, hi = start.min(), start.max()
        cut = hi - self.window * (hi - lo)
        recent = frame[start >= cut]
        # On integer codes, not strings: a million-viewer log is 30M rows.
        users, _ = _codes(recent[UID])
        codes, names = _codes(recent[STREAMER])
        if self.by == "viewers":
            pairs = pd.unique(users.astype(np.int64) * max(len(names), 1) + codes)
            values = np.bincount(pairs % max(len(names), 1), minlength=len(names))
        elif self.by == "sessions":
            values = np.bincount(codes, minlength=len(names))
        else:
            values = np.bincount(codes, weights=session_lengths(recent, time_format), minlength=len(names))
        if streamers is None:
            streamers = IdMap.from_ids(names[values > 0])
        if isinstance(recent[STREAMER].dtype, pd.CategoricalDtype):
            rows = streamers.category_rows(recent[STREAMER].cat.categories)
        else:
            rows = streamers.rows(names)
        keep = (rows >= 0) & (values > 0)
        # Every streamer of the map is ranked: those unseen in the window score 0, at the end.
        per_row = np.zeros(len(streamers), dtype=np.float64)
        per_row[rows[keep]] = values[keep]
        # Ties broken by row (first appearance in the log): deterministic, and no string sort of
        # a million names.
        order = np.argsort(-per_row, kind="stable")
        self.ranking, self.scores = order, per_row[order].astype(np.float32)
        self.streamers = streamers
        return self

    def recommend(self, k: int = 10, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k streamer rows and their popularity, skipping rows in `exclude`."""
        return most_popular(self.ranking, self.popularity, k, exclude)

    @property
    def popularity(self) -> np.ndarray:
        """Popularity per streamer row (float32), as a model stores it."""
        out = np.zeros(len(self.ranking), dtype=np.float32)
        out[self.ranking] = self.scores
        return out

    def recommend_names(self, k: int = 10) -> list[tuple[str, float]]:
        assert self.streamers is not None, "fit first"
        rows, scores = self.recommend(k)
        return list(zip(self.streamers.ids[rows].tolist(), scores.tolist(), strict=True))


def most_popular(
    ranking: np.ndarray, popularity: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first k rows of `ranking` (streamer rows, most popular first) not in `exclude`, and
    their `popularity` (indexed by streamer row): the one popular list, for viewers nobody knows,
    of the live set, or of a filter's streamers."""
    if exclude is not None and len(exclude):
        head = ranking[: k + len(exclude)]  # at most len(exclude) of these are skipped
        ranking = head[~np.isin(head, exclude)]
    rows = ranking[:k]
    return rows, popularity[rows]


def top_up(
    rows: np.ndarray, scores: np.ndarray, k: int, ranking: np.ndarray, popularity: np.ndarray, skip: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A ranked list shorter than k completed from `ranking` (most popular first): take in order,
    skip what is listed or in `skip` (`rows` among it), stop at k. The extra streamers score below
    the list (its last score - 1, - 2, ...), since the two scores are not on one scale."""
    if not len(ranking):
        return rows, scores
    extra, _ = most_popular(ranking, popularity, k - len(rows), exclude=skip)
    floor = float(scores[-1]) if len(scores) else 0.0
    return np.concatenate([rows, extra]), np.concatenate([scores, floor - 1.0 - np.arange(len(extra))])

"""Popularity: the list for viewers the model does not know, and the top-up for short lists.

    python cold_start.py data/demo_sessions.csv --by viewers --window 0.25 -k 10

Popularity is measured over a recent window of the log, as a fraction of its time span (the unit
of integer times is unknown to us, a fraction is not), by one of
- `viewers`: distinct viewers (robust: one binge-watcher does not make a streamer popular);
- `sessions`: number of sessions;
- `watch_time`: summed session length.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from interactions import IdMap, session_lengths
from sessions import START, STREAMER, UID, DataError, read_sessions

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
        scores = np.zeros(len(streamers), dtype=np.float64)
        scores[rows[keep]] = values[keep]
        values = scores
        # Ties broken by row (first appearance in the log): deterministic, and no string sort of
        # a million names.
        order = np.argsort(-values, kind="stable")
        self.ranking, self.scores = order, values[order].astype(np.float32)
        self.streamers = streamers
        return self

    def recommend(self, k: int = 10, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k streamer rows and their popularity, skipping rows in `exclude`."""
        ranking, scores = self.ranking, self.scores
        if exclude is not None and len(exclude):
            keep = ~np.isin(ranking[: k + len(exclude)], exclude)
            ranking, scores = ranking[: k + len(exclude)][keep], scores[: k + len(exclude)][keep]
        return ranking[:k], scores[:k]

    def recommend_names(self, k: int = 10) -> list[tuple[str, float]]:
        assert self.streamers is not None, "fit first"
        rows, scores = self.recommend(k)
        return list(zip(self.streamers.ids[rows].tolist(), scores.tolist(), strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the most popular streamers of a sessions file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data", help="sessions CSV")
    parser.add_argument("--by", choices=POPULARITY_BY, default="viewers", help="popularity measure")
    parser.add_argument("--window", type=float, default=1.0, help="recent fraction of the time span, (0, 1]")
    parser.add_argument("-k", type=int, default=10, help="how many streamers")
    args = parser.parse_args(argv)
    try:
        sessions = read_sessions(args.data)
        pop = PopularityRecommender(args.by, args.window).fit(sessions.frame, sessions.time_format)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rank, (name, score) in enumerate(pop.recommend_names(args.k), 1):
        print(f"{rank:3d}  {name}  {score:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

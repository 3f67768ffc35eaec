"""Availability: which streamers are live right now, in the form ranking needs.

    live = LiveSet.build(model, ["streamer_a", "streamer_b"])
    model.recommend_among(row, live.candidates, k=10)

A viewer can only watch a streamer who is live, so live-only rankings score just the live
streamers: a few thousand dot products per request. Everything per-set (their factors, the live
part of the popularity ranking) is gathered once when the set is published, not per request.
A LiveSet belongs to one model; after a model reload it is rebuilt from its names.

The published names are also kept in a small JSON file (`write_live`/`read_live`), so that every
worker process serves the same live set and a restarted worker starts with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_file import atomic_write
from ranking import ranked_lists
from recommender import Candidates, Recommender

LIVE_LIST_LENGTH = 20  # live-only lists ranked in advance per user; larger k ranks on request


@dataclass(frozen=True)
class LiveSet:
    names: tuple[str, ...]  # as published, known to the model or not
    rows: np.ndarray  # sorted streamer rows of the live streamers the model knows
    candidates: Candidates  # the same rows, gathered for ranking
    mask: np.ndarray  # bool per streamer row
    popular: np.ndarray  # live streamer rows, most popular first
    unknown: int  # distinct published names the model does not know
    since: datetime
    # Every user's top LIVE_LIST_LENGTH live streamers per ranker, as Recommender.lists.
    lists: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def build(cls, model: Recommender, names: list[str], since: datetime | None = None, rank: bool = True) -> LiveSet:
        """The live set of `names` for `model`; with `rank`, every user's live-only lists are
        ranked now (about two seconds for 100k users and 1,000 live streamers) so that a
        live-only request is a lookup, like a default one."""
        distinct = list(dict.fromkeys(names))
        rows = model.streamers.rows(distinct)
        known = np.unique(rows[rows >= 0])
        mask = np.zeros(model.n_streamers, dtype=bool)
        mask[known] = True
        return cls(
            names=tuple(distinct),
            rows=known,
            candidates=model.candidates(known),
            mask=mask,
            popular=model.popular_ranking[mask[model.popular_ranking]],
            unknown=int(np.count_nonzero(rows < 0)),
            since=since or datetime.now(UTC),
            lists=_live_lists(model, known) if rank and len(known) else None,
        )

    def recommend(self, model: Recommender, row: int, k: int, exclude_watched: bool) -> tuple[np.ndarray, np.ndarray]:
        """A known user's top-k live streamers: from the lists ranked in advance when k fits,
        else ranked on request (the same ranking)."""
        if self.lists is not None and k <= LIVE_LIST_LENGTH:
            ids, scores = self.lists["new" if exclude_watched else "all"]
            top = ids[row, :k]
            n = int(np.count_nonzero(top >= 0))
            return top[:n], scores[row, :n]
        return model.recommend_among(row, self.candidates, k, exclude_watched, live=True)

    def __len__(self) -> int:
        return len(self.rows)


def write_live(path: Path, names: list[str], since: datetime) -> int:
    """Write the published names atomically (as the model file is written); returns the file's
    mtime_ns (its version)."""
    body = json.dumps({"since": since.isoformat(), "streamers": names}).encode()
    atomic_write(path, lambda f: f.write(body))
    return path.stat().st_mtime_ns


def read_live(path: Path) -> tuple[list[str], datetime, int] | None:
    """(names, since, mtime_ns) from a file written by write_live; None if absent or unreadable."""
    try:
        version = path.stat().st_mtime_ns
        data = json.loads(path.read_text())
        names = [str(n) for n in data["streamers"]]
        return names, datetime.fromisoformat(data["since"]), version
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _live_lists(model: Recommender, known: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every user's live-only lists: the live ranker (model.live_ranker) for the default list,
    the discovery ranker with exclude_watched."""
    rankers = {"all": model.rankers[model.live_ranker], "new": model.rankers["new"]}
    return ranked_lists(model, rankers, LIVE_LIST_LENGTH, among=known, bonus=model.live_bonus)[0]

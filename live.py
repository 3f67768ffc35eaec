"""Availability: which streamers are live right now, in the form ranking needs.

    live = LiveSet.build(model, ["streamer_a", "streamer_b"])
    model.recommend_among(row, live.rows, k=10)

A viewer can only watch a streamer who is live, so live-only rankings score just the live
streamers: a few thousand dot products per request. Everything per-set (rows, a position map,
the live part of the popularity ranking) is computed once when the set is published, not per
request. A LiveSet belongs to one model; after a model reload it is rebuilt from its names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from recommender import Recommender


@dataclass(frozen=True)
class LiveSet:
    names: tuple[str, ...]  # as published, known to the model or not
    rows: np.ndarray  # sorted streamer rows of the live streamers the model knows
    mask: np.ndarray  # bool per streamer row
    popular: np.ndarray  # live streamer rows, most popular first
    unknown: int  # distinct published names the model does not know
    since: datetime

    @classmethod
    def build(cls, model: Recommender, names: list[str], since: datetime | None = None) -> LiveSet:
        distinct = list(dict.fromkeys(names))
        rows = model.streamers.rows(distinct)
        known = np.unique(rows[rows >= 0])
        mask = np.zeros(model.n_streamers, dtype=bool)
        mask[known] = True
        return cls(
            names=tuple(distinct),
            rows=known,
            mask=mask,
            popular=model.popular_ranking[mask[model.popular_ranking]],
            unknown=int(np.count_nonzero(rows < 0)),
            since=since or datetime.now(UTC),
        )

    def __len__(self) -> int:
        return len(self.rows)

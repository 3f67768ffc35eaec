"""The trained model's data: factors, history, popularity, rankers and ranked lists, with what is
derived from them. How it ranks is `model/scoring.py`; its file `model/model_file.py`.

    from streamrec.model.model_file import load_model
    from streamrec.model.scoring import recommend_for
    model = load_model("models/model.pkl")
    recommend_for(model, "42", k=10)   # ("personal", [("streamer", score), ...])

Everything per viewer or per pair is a flat array (factors, history, ranked lists), so a loaded
model is a set of read-only views of one mapped file; what is derived from them is computed on
first use, and what serving needs on every request is stored in the file instead.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from streamrec.data.interactions import IdMap, pack
from streamrec.model.ranking import HISTORY, POP, RankerName, RankerWeights, entry_history_features

# Precomputed ranking length per user and ranker. Requests for more (the API allows k up to 100)
# are ranked on request, about 0.1 ms. At a million viewers 100 per list cost 1.6 GB of file and
# memory and most of the lists' ranking time, for the rare client that asks past the first screen.
LIST_LENGTH = 30
LIVE_LIST_LENGTH = 20  # live-only lists ranked in advance per user (serve/live.py); larger k ranks on request


@dataclass(frozen=True)
class Candidates:
    """A set of streamers to rank among (e.g. the live ones), gathered once so that ranking a
    user among them is one matrix-vector product and a few vector operations."""

    rows: np.ndarray  # sorted streamer rows
    factors: np.ndarray  # their ALS factors, contiguous
    pop: dict[str, np.ndarray]  # per ranker: its popularity term for each of them


class JsonNames:
    """Strings as one UTF-8 blob and offsets: row r is blob[offsets[r]:offsets[r + 1]]."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets
        self._raw = np.ascontiguousarray(blob).data.cast("B")
        self._offsets = np.ascontiguousarray(offsets).data.cast("B").cast("q")  # Python ints, fast

    @classmethod
    def of(cls, names) -> JsonNames:
        return cls(*pack([json.dumps(str(n)).encode() for n in names]))

    def __getitem__(self, row: int) -> bytes:
        return bytes(self._raw[self._offsets[row] : self._offsets[row + 1]])


_SERIALS = itertools.count(1)


def popularity_feature(popularity: np.ndarray) -> np.ndarray:
    """The ranker's popularity feature: log(1 + recent distinct viewers), scaled to [0, 1]."""
    top = max(float(popularity.max(initial=0.0)), 1.0)
    return (np.log1p(popularity) / np.log1p(top)).astype(np.float32)


@dataclass
class Recommender:
    """A trained model. Matrices are users x streamers CSR; rows follow `users` and `streamers`."""

    als: AlternatingLeastSquares
    users: IdMap
    streamers: IdMap
    count: sp.csr_matrix  # sessions per pair
    watch_time: sp.csr_matrix  # summed session length per pair, same pattern as count
    last_seen: sp.csr_matrix  # latest time_end per pair, same pattern
    popularity: np.ndarray  # per streamer row: recent distinct viewers
    popular_ranking: np.ndarray  # streamer rows, most popular first (covers every streamer)
    catalog: np.ndarray  # streamer rows worth recommending to someone new to them
    time_max: int
    time_span: int
    rankers: dict[str, RankerWeights]  # by RankerName: ALL and NEW always, LIVE when learned
    strength: str = "binary"  # how sessions became ALS input (interactions.STRENGTHS)
    metadata: dict = field(default_factory=dict)
    # Per user, the top LIST_LENGTH streamer rows and scores of each ranker, padded with -1,
    # and the user's best ALS score over the catalog (a ranker feature needs it).
    lists: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    best_als: np.ndarray | None = None
    # Per ranker that scores watched streamers ("all", and the live one), the served score of every
    # history entry, computed with the lists: ranking on request then reads a watched streamer's
    # score instead of recomputing it (one small product and a dozen vector operations).
    own_scores: dict[str, np.ndarray] = field(default_factory=dict)
    # Training-time ranker inputs (interactions.Interactions.recent, .decayed); not in model files,
    # which keep the history terms computed from them (history_bonus).
    recent: sp.csr_matrix | None = None
    decayed: sp.csr_matrix | None = None
    checksum: str = ""  # of the file's header, once loaded (model_file.header_checksum); "": not loaded
    # The ranker's popularity feature when an update kept it (train/update.py): the known streamers'
    # as the lists were ranked with it, new streamers' from their popularity. None: from `popularity`.
    frozen_pop_feature: np.ndarray | None = None

    # Derived on first use, not at load: a loaded model is mapped arrays, and a serving worker
    # must not spend seconds and private memory on what it may never read.

    @cached_property
    def serial(self) -> int:
        """A number of its own in this process: what a cache keys on without holding the model."""
        return next(_SERIALS)

    @cached_property
    def _streamer_rows(self) -> dict[str, int]:
        return {}

    def streamer_row(self, name: str) -> int:
        """The row of streamer `name`, -1 if the model does not know it. Remembered: a loaded map
        looks a name up in about 4 us, a dict in 50 ns (emptied past the number of streamers plus
        100,000 names, so unknown names cannot grow it without bound)."""
        memo = self._streamer_rows
        row = memo.get(name)
        if row is None:
            if len(memo) >= self.n_streamers + 100_000:
                memo.clear()
            found = self.streamers.get(name)
            row = memo[name] = -1 if found is None else found
        return row

    @cached_property
    def user_totals(self) -> np.ndarray:
        return np.asarray(self.count.sum(axis=1)).ravel()

    @cached_property
    def user_watch_totals(self) -> np.ndarray:
        return np.asarray(self.watch_time.sum(axis=1)).ravel()

    @cached_property
    def pop_feature(self) -> np.ndarray:
        if self.frozen_pop_feature is not None:
            return self.frozen_pop_feature
        return popularity_feature(self.popularity)

    @cached_property
    def catalog_factors(self) -> np.ndarray:
        return np.ascontiguousarray(self.als.item_factors[self.catalog])

    @cached_property
    def history_keys(self) -> np.ndarray:
        """user * n_streamers + streamer for every history entry, sorted: pair lookups by bisection."""
        return self.entry_rows() * self.n_streamers + self.count.indices

    @cached_property
    def names_json(self) -> JsonNames:
        """Every streamer name JSON-encoded, for responses built as strings (stored in the file)."""
        return JsonNames.of(self.streamers.ids)

    def entry_rows(self) -> np.ndarray:
        """The user row of every history entry (aligned with count.data), int64."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.count.indptr))

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_streamers(self) -> int:
        return len(self.streamers)

    def history(self, row: int) -> tuple[np.ndarray, slice]:
        """Streamer rows the user watched (sorted) and the slice of their entries."""
        lo, hi = self.count.indptr[row], self.count.indptr[row + 1]
        return self.count.indices[lo:hi], slice(lo, hi)

    @cached_property
    def history_bonus(self) -> np.ndarray:
        """The `all` ranker's history terms for every history entry (aligned with count.data)."""
        return self._history_terms(RankerName.ALL)

    @cached_property
    def live_bonus(self) -> np.ndarray:
        """The live-only ranker's history terms for every history entry."""
        return self._history_terms(self.live_ranker)

    @property
    def live_ranker(self) -> RankerName:
        """The ranker behind live-only lists: `live` (learned on next sessions among the streamers
        then live) when the model has one, else `all`."""
        return RankerName.LIVE if RankerName.LIVE in self.rankers else RankerName.ALL

    def _history_terms(self, name: str) -> np.ndarray:
        """Ranker `name`'s history terms for every history entry (a watched_shift is applied
        where pairs are scored, from their ALS score)."""
        _, w = self.rankers[name].linear()
        entry_rows = self.entry_rows()
        out = np.empty(self.count.nnz, dtype=np.float32)
        for lo in range(0, self.count.nnz, 1 << 20):  # blocks: features of every entry at once are GBs
            entries = np.arange(lo, min(lo + (1 << 20), self.count.nnz))
            out[entries] = entry_history_features(self, entries, entry_rows[entries]) @ w[HISTORY]
        return out

    @cached_property
    def linear(self) -> dict[str, tuple[float, np.ndarray]]:
        """Each ranker as (c, w) with score = c + features . w."""
        return {name: weights.linear() for name, weights in self.rankers.items()}

    def candidates(self, rows: np.ndarray) -> Candidates:
        """What ranking among `rows` (sorted, distinct streamer rows) needs, gathered once."""
        factors = np.ascontiguousarray(self.als.item_factors[rows])
        pop = {name: (w[POP] * self.pop_feature[rows]).astype(np.float32) for name, (_, w) in self.linear.items()}
        return Candidates(rows, factors, pop)

    @cached_property
    def catalog_candidates(self) -> Candidates:
        return self.candidates(self.catalog)

    @cached_property
    def in_catalog(self) -> np.ndarray:
        mask = np.zeros(self.n_streamers, dtype=bool)
        mask[self.catalog] = True
        return mask

"""The trained model: what serving needs and how it ranks. Its file is `model_file.py`.

    from model_file import load_model
    model = load_model("models/model.pkl")
    model.recommend_for("42", k=10)   # ("personal", [("streamer", score), ...])

Everything per viewer or per pair is a flat array (factors, history, ranked lists), so a loaded
model is a set of read-only views of one mapped file; what is derived from them is computed on
first use, and what serving needs on every request is stored in the file instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from interactions import RECENT_SESSIONS, STRENGTHS, IdMap, pack
from progress import progress
from ranking import (
    ALS,
    GAP,
    HISTORY,
    POP,
    RankerWeights,
    entry_history_features,
    history_features,
    ranked_lists,
    top_n,
)

PERSONAL, POPULAR, RECENT = "personal", "popular", "recent"


# Precomputed ranking length per user and ranker. Requests for more (the API allows k up to 100)
# are ranked on request, about 0.1 ms. At a million viewers 100 per list cost 1.6 GB of file and
# memory and most of the lists' ranking time, for the rare client that asks past the first screen.
LIST_LENGTH = 30


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
        self._raw = memoryview(blob).cast("B")
        self._offsets = memoryview(np.ascontiguousarray(offsets)).cast("B").cast("q")  # Python ints, fast

    @classmethod
    def of(cls, names) -> JsonNames:
        return cls(*pack([json.dumps(str(n)).encode() for n in names]))

    def __getitem__(self, row: int) -> bytes:
        return bytes(self._raw[self._offsets[row] : self._offsets[row + 1]])


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
    rankers: dict[str, RankerWeights]  # "all" (served default) and "new" (exclude_watched)
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

    # Derived on first use, not at load: a loaded model is mapped arrays, and a serving worker
    # must not spend seconds and private memory on what it may never read.

    @cached_property
    def user_totals(self) -> np.ndarray:
        return np.asarray(self.count.sum(axis=1)).ravel()

    @cached_property
    def user_watch_totals(self) -> np.ndarray:
        return np.asarray(self.watch_time.sum(axis=1)).ravel()

    @cached_property
    def pop_feature(self) -> np.ndarray:
        top = max(float(self.popularity.max(initial=0.0)), 1.0)
        return (np.log1p(self.popularity) / np.log1p(top)).astype(np.float32)

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

    # --- ranking -------------------------------------------------------------------------

    def history(self, row: int) -> tuple[np.ndarray, slice]:
        """Streamer rows the user watched (sorted) and the slice of their entries."""
        lo, hi = self.count.indptr[row], self.count.indptr[row + 1]
        return self.count.indices[lo:hi], slice(lo, hi)

    def build_lists(self, show_progress: bool = False) -> None:
        """Rank the catalog (and each user's history) for every user with both rankers."""
        for derived in ("history_bonus", "live_bonus", "linear", "catalog_candidates"):  # rankers may have changed
            self.__dict__.pop(derived, None)
        if show_progress:
            with progress("ranked lists", self.n_users, "users") as bar:
                self.lists, self.best_als = ranked_lists(self, self.rankers, LIST_LENGTH, done=bar.update)
        else:
            self.lists, self.best_als = ranked_lists(self, self.rankers, LIST_LENGTH)
        self.own_scores = {name: self._entry_scores(name) for name in {"all", self.live_ranker}}

    def _entry_scores(self, name: str) -> np.ndarray:
        """Ranker `name`'s score of every history entry, as _with_own computes it on request."""
        bonus = self.history_bonus if name == "all" else self.live_bonus
        entry_rows = self.entry_rows()
        out = np.empty(self.count.nnz, dtype=np.float32)
        for lo in range(0, self.count.nnz, 1 << 20):  # blocks: the factor rows of every entry are GBs
            block = slice(lo, min(lo + (1 << 20), self.count.nnz))
            users, items = entry_rows[block], self.count.indices[block]
            out[block] = self._own_scores(
                name,
                self.als.user_factors[users],
                self.best_als[users].astype(np.float64),
                items,
                bonus[block],
            )
        return out

    @cached_property
    def history_bonus(self) -> np.ndarray:
        """The `all` ranker's history terms for every history entry (aligned with count.data)."""
        return self._history_terms("all")

    @cached_property
    def live_bonus(self) -> np.ndarray:
        """The live-only ranker's history terms for every history entry."""
        return self._history_terms(self.live_ranker)

    @property
    def live_ranker(self) -> str:
        """The ranker behind live-only lists: `live` (learned on next sessions among the streamers
        then live) when the model has one, else `all`."""
        return "live" if "live" in self.rankers else "all"

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

    def recommend(self, row: int, k: int = 10, exclude_watched: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k streamer rows and ranker scores for a known user row: a slice of the stored list,
        or ranked on request when k is longer than it. Fewer candidates than k (a small catalog)
        are topped up with popular streamers, scored below the list."""
        ids, scores = self.lists["new" if exclude_watched else "all"]
        top, top_s = ids[row, :k], scores[row, :k]
        n = int(np.count_nonzero(top >= 0))
        if n == k:
            return top, top_s
        if n == ids.shape[1]:  # the stored list is full and k asks for more
            top, top_s = self.rank_known(row, k, exclude_watched)
            n = len(top)
            if n == k:
                return top, top_s
        top, top_s = top[:n], top_s[:n]
        skip = np.concatenate([top, self.history(row)[0]]) if exclude_watched else top
        extra, _ = self.recommend_popular(k - n, exclude=skip)
        floor = float(top_s[-1]) if n else 0.0
        return np.concatenate([top, extra]), np.concatenate([top_s, floor - 1.0 - np.arange(len(extra))])

    def rank_known(self, row: int, k: int, exclude_watched: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """What the stored lists hold, ranked on request and as long as asked: the catalog, and
        for the default ranking also the viewer's own streamers outside it."""
        return self.recommend_among(row, self.catalog_candidates, k, exclude_watched, outside=True)

    def recommend_popular(
        self, k: int = 10, ranking: np.ndarray | None = None, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most popular streamers, of `ranking` (a popularity-ordered subset) if given,
        skipping the rows in `exclude`."""
        rows = self.popular_ranking if ranking is None else ranking
        if exclude is not None and len(exclude):
            head = rows[: k + len(exclude)]  # at most len(exclude) of these are skipped
            rows = head[~np.isin(head, exclude)]
        rows = rows[:k]
        return rows, self.popularity[rows]

    # --- ranking on request: a subset of streamers, or a viewer known by recent history ----

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

    def recommend_among(
        self,
        row: int,
        candidates: Candidates | np.ndarray,
        k: int = 10,
        exclude_watched: bool = False,
        live: bool = False,
        outside: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The served ranking of a known user restricted to `candidates`: one dot product per
        candidate, the history terms precomputed. With `live` (the candidates are the streamers
        live now), the live-only ranker orders them; with `outside`, the viewer's own streamers
        that are not candidates are ranked too (not with exclude_watched). Gives exactly
        min(k, streamers ranked)."""
        if not isinstance(candidates, Candidates):
            candidates = self.candidates(candidates)
        best = float(self.best_als[row]) if self.best_als is not None else 0.0
        watched, entries = self.history(row)
        bonus = (self.live_bonus if live else self.history_bonus)[entries]
        ranker = self.live_ranker if live and not exclude_watched else None
        vector = self.als.user_factors[row]
        return self._rank(vector, best, candidates, k, exclude_watched, watched, bonus, ranker, outside, entries)

    def recommend_passing(
        self,
        row: int,
        candidates: Candidates,
        passes: np.ndarray,
        k: int = 10,
        exclude_watched: bool = False,
        live: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """What rank_known ranks, of the streamers `passes` lets through (a bool per streamer
        row); `candidates` must be the catalog's streamers that pass, gathered (a filter's). With
        `live` (a bool per row: live now), the live streamers that pass instead, ranked as
        recommend_among(live=True) ranks them. Only the viewer's own streamers that pass are
        looked up: often none, for a narrow filter."""
        name = "new" if exclude_watched else (self.live_ranker if live is not None else "all")
        best = float(self.best_als[row]) if self.best_als is not None else 0.0
        vector = self.als.user_factors[row]
        rows = candidates.rows
        scores = self._scores(name, candidates.factors @ vector, best, candidates.pop[name])
        watched, entries = self.history(row)
        own = np.flatnonzero(passes[watched])
        mine = watched[own]
        if len(mine):
            among = (self.in_catalog if live is None else live)[mine]  # the candidates of them
            scores[np.searchsorted(rows, mine[among])] = -np.inf  # left out, or ranked below as watched
            if not exclude_watched:
                if live is not None:  # a streamer not live now is no candidate
                    own, mine = own[among], mine[among]
                bonus = (self.history_bonus if live is None else self.live_bonus)[entries][own]
                rows, scores = self._with_own(name, vector, best, rows, scores, mine, bonus, own + entries.start)
        top = top_n(scores, k)
        top = top[np.isfinite(scores[top])]
        return rows[top], scores[top]

    def recommend_recent(
        self,
        names: list[str],
        k: int = 10,
        exclude_watched: bool = False,
        candidates: Candidates | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The served ranking for a viewer the model does not know, from the streamers they
        watched recently (`names`, most recent first or not: order is ignored; repeats count).
        Their ALS vector is solved against the trained streamer factors (implicit's
        recalculate_user); the recent streamers count as sessions just watched. Candidates: the
        catalog plus the recent streamers, or `candidates` if given; of those, only the rows that
        `allowed` (a bool per streamer row) lets through. None if no name is known."""
        rows = self.streamers.rows(names)
        items, counts = np.unique(rows[rows >= 0], return_counts=True)
        if len(items) == 0:
            return None
        strength = STRENGTHS[self.strength](counts.astype(np.float64), counts.astype(np.float64))
        user_items = sp.csr_matrix(
            (np.asarray(strength, np.float32), items, [0, len(items)]), shape=(1, self.n_streamers)
        )
        vector = self.als.recalculate_user(0, user_items)
        best = float((self.catalog_factors @ vector).max(initial=0.0))
        if candidates is None:
            outside = items[~self.in_catalog[items]]
            if len(outside):
                candidates = self.candidates(np.sort(np.concatenate([self.catalog, outside])))
            else:
                candidates = self.catalog_candidates
        if allowed is not None:
            candidates = self.candidates(candidates.rows[allowed[candidates.rows]])
        _, w = self.linear["all"]
        total = np.full(len(items), float(counts.sum()))
        # All just watched: every session is recent and undecayed.
        recent = counts * (min(counts.sum(), RECENT_SESSIONS) / counts.sum())
        bonus = history_features(counts, counts, total, total, np.zeros(len(items)), recent, counts) @ w[HISTORY]
        return self._rank(vector, best, candidates, k, exclude_watched, items, bonus.astype(np.float32))

    def _rank(
        self,
        vector: np.ndarray,
        best: float,
        candidates: Candidates,
        k: int,
        exclude_watched: bool,
        watched: np.ndarray,
        bonus: np.ndarray,
        ranker: str | None = None,
        outside: bool = False,
        entries: slice | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `candidates` for one user vector by the served ranker (`ranker`, default
        `all`; `new` with exclude_watched). `watched` (sorted streamer rows) are left out with
        exclude_watched; else they are ranked with their history terms `bonus` (of that ranker):
        those that are candidates, and with `outside` all the others too. `entries`: their
        slice of the history, when they are the viewer's history (not recent names)."""
        name = "new" if exclude_watched else (ranker or "all")
        rows = candidates.rows
        scores = self._scores(name, candidates.factors @ vector, best, candidates.pop[name])
        if len(watched):
            pos = np.searchsorted(rows, watched)
            hit = pos < len(rows)
            hit[hit] = rows[pos[hit]] == watched[hit]
            scores[pos[hit]] = -np.inf  # left out, or ranked below as watched
            if not exclude_watched:
                own = np.ones(len(watched), dtype=bool) if outside else hit
                at = np.arange(entries.start, entries.stop)[own] if entries is not None else None
                rows, scores = self._with_own(name, vector, best, rows, scores, watched[own], bonus[own], at)
        top = top_n(scores, k)
        top = top[np.isfinite(scores[top])]
        return rows[top], scores[top]

    def _with_own(
        self,
        name: str,
        vector: np.ndarray,
        best: float,
        rows: np.ndarray,
        scores: np.ndarray,
        mine: np.ndarray,
        bonus: np.ndarray,
        entries: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`rows` and their `scores` with the viewer's own streamers `mine` (none of them among
        `rows` with a finite score) added, scored by ranker `name` as watched, `bonus` their history
        terms: read from own_scores when they are history `entries` and the model has them."""
        if not len(mine):
            return rows, scores
        stored = self.own_scores.get(name) if entries is not None else None
        if stored is not None:
            own = stored[entries]
        else:
            own = self._own_scores(name, vector, best, mine, bonus)
        return np.concatenate([rows, mine]), np.concatenate([scores, own])

    def _own_scores(self, name: str, vectors: np.ndarray, best, items: np.ndarray, bonus: np.ndarray) -> np.ndarray:
        """Ranker `name`'s scores of watched streamers `items`: for one user (`vectors` its ALS
        vector, `best` its best catalog score) or one per item (a row and a best each)."""
        pop = self.pop_feature[items]
        factors = self.als.item_factors[items]
        als = factors @ vectors if vectors.ndim == 1 else np.einsum("ij,ij->i", factors, vectors)
        own = self._scores(name, als, best, (self.linear[name][1][POP] * pop).astype(np.float32))
        own += self._watched_terms(name, bonus, als, best, pop)
        return own.astype(np.float32, copy=False)

    def _scores(self, name: str, als: np.ndarray, best, pop: np.ndarray) -> np.ndarray:
        """Ranker `name`'s score, as never watched, of streamers with ALS scores `als` for a user
        whose best catalog ALS score is `best` (or one best per streamer); `pop`: the ranker's
        popularity term of each."""
        c, w = self.linear[name]
        scores = als * float(w[ALS] - w[GAP])
        # Python floats where one number: numpy scalars cost more per operation.
        scores += float(c + w[GAP] * best) if np.isscalar(best) else c + w[GAP] * best
        scores += pop
        return scores

    def _watched_terms(self, name: str, bonus: np.ndarray, als: np.ndarray, best: float, pop: np.ndarray) -> np.ndarray:
        """What watching adds to ranker `name`'s score: the history terms `bonus` and, for a
        ranker split by watched, its shifted ALS, gap and popularity (`pop`: pop_feature) weights."""
        shift = self.rankers[name].watched_shift
        if shift is None:
            return bonus
        # shift . (als, best - als, pop), in Python floats: numpy scalars cost more per operation
        terms = als * float(shift[ALS] - shift[GAP])
        terms += float(shift[GAP] * best) if np.isscalar(best) else shift[GAP] * best
        terms += pop * float(shift[POP])
        terms += bonus
        return terms

    def similar(self, row: int, k: int = 10, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Streamers whose audiences overlap with streamer `row`'s: cosine similarity of ALS
        streamer factors, among the catalog (or `candidates`), never the streamer itself."""
        candidates = self.catalog if candidates is None else candidates
        candidates = candidates[candidates != row]
        factors = self.als.item_factors
        norms = np.linalg.norm(factors[candidates], axis=1) * max(float(np.linalg.norm(factors[row])), 1e-12)
        scores = (factors[candidates] @ factors[row]) / np.maximum(norms, 1e-12)
        top = top_n(scores, k)
        return candidates[top], scores[top]

    def recommend_for(
        self, user_id: str, k: int = 10, exclude_watched: bool = False
    ) -> tuple[str, list[tuple[str, float]]]:
        """(source, [(streamer_name, score), ...]) for any user id; unknown users get popular."""
        row = self.users.get(user_id)
        if row is None:
            source, (rows, scores) = POPULAR, self.recommend_popular(k)
        else:
            source, (rows, scores) = PERSONAL, self.recommend(row, k, exclude_watched)
        names = [self.streamers.name(r) for r in rows.tolist()]
        return source, list(zip(names, scores.astype(float).tolist(), strict=True))


def personal_recommendations(
    model: Recommender, user_id: str, k: int = 10, exclude_watched: bool = False
) -> tuple[str, list[tuple[str, float]]]:
    """(source, [(streamer_name, score), ...]) for one viewer, as `GET /recomendations/user/{id}`
    ranks them: "personal" for a viewer the model knows, "popular" for one it does not. The
    founding description's name for `Recommender.recommend_for`."""
    return model.recommend_for(str(user_id), k, exclude_watched)

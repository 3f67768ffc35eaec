"""The trained model: what serving needs, how it ranks, and its one file on disk.

    from recommender import load_model
    model = load_model("models/model.pkl")
    model.recommend_for("42", k=10)   # ("personal", [("streamer", score), ...])

The file is a pickle (one file, as the design asks) written atomically and read back through an
allow-list unpickler: only numpy arrays, dtypes and implicit's CPU ALS class may be
reconstructed, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from interactions import STRENGTHS, IdMap
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

FORMAT = "streamer-recommender"
FORMAT_VERSION = 3  # 2: precomputed ranked lists; 3: best ALS score per user, strength
PERSONAL, POPULAR, RECENT = "personal", "popular", "recent"

# (module, name) pairs a model file may reference; everything else is refused.
_ALLOWED_GLOBALS = {
    ("implicit.cpu.als", "AlternatingLeastSquares"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
}


class ModelError(Exception):
    """A model file cannot be written or used; the message is one line meant for a person."""


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a model component")


LIST_LENGTH = 100  # precomputed ranking length per user: the API's largest k


@dataclass(frozen=True)
class Candidates:
    """A set of streamers to rank among (e.g. the live ones), gathered once so that ranking a
    user among them is one matrix-vector product and a few vector operations."""

    rows: np.ndarray  # sorted streamer rows
    factors: np.ndarray  # their ALS factors, contiguous
    pop: dict[str, np.ndarray]  # per ranker: its popularity term for each of them


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

    def __post_init__(self) -> None:
        self.user_totals = np.asarray(self.count.sum(axis=1)).ravel()
        self.user_watch_totals = np.asarray(self.watch_time.sum(axis=1)).ravel()
        top = max(float(self.popularity.max(initial=0.0)), 1.0)
        self.pop_feature = (np.log1p(self.popularity) / np.log1p(top)).astype(np.float32)
        self.catalog_factors = np.ascontiguousarray(self.als.item_factors[self.catalog])
        # user * n_streamers + streamer for every history entry, sorted: pair lookups by bisection
        entry_rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.count.indptr))
        self.history_keys = entry_rows * self.n_streamers + self.count.indices

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

    def build_lists(self) -> None:
        """Rank the catalog (and each user's history) for every user with both rankers."""
        self.lists, self.best_als = ranked_lists(self, self.rankers, LIST_LENGTH)
        for derived in ("history_bonus", "linear", "catalog_candidates"):  # the rankers may have changed
            self.__dict__.pop(derived, None)

    @cached_property
    def history_bonus(self) -> np.ndarray:
        """The `all` ranker's history terms for every history entry (aligned with count.data)."""
        _, w = self.rankers["all"].linear()
        entry_rows = np.repeat(np.arange(self.n_users), np.diff(self.count.indptr))
        entries = np.arange(self.count.nnz)
        return (entry_history_features(self, entries, entry_rows) @ w[HISTORY]).astype(np.float32)

    def recommend(self, row: int, k: int = 10, exclude_watched: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k streamer rows and ranker scores for a known user row. Lists shorter than k (a
        catalog smaller than k) are topped up with popular streamers, scored below the list."""
        ids, scores = self.lists["new" if exclude_watched else "all"]
        top, top_s = ids[row, :k], scores[row, :k]
        n = int(np.count_nonzero(top >= 0))
        if n == k:
            return top, top_s
        top, top_s = top[:n], top_s[:n]
        skip = np.concatenate([top, self.history(row)[0]]) if exclude_watched else top
        extra, _ = self.recommend_popular(k - n, exclude=skip)
        floor = float(top_s[-1]) if n else 0.0
        return np.concatenate([top, extra]), np.concatenate([top_s, floor - 1.0 - np.arange(len(extra))])

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
        self, row: int, candidates: Candidates | np.ndarray, k: int = 10, exclude_watched: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The served ranking of a known user restricted to `candidates` (e.g. the live
        streamers): one dot product per candidate, the history terms precomputed. Gives exactly
        min(k, candidates left) streamers."""
        if not isinstance(candidates, Candidates):
            candidates = self.candidates(candidates)
        best = float(self.best_als[row]) if self.best_als is not None else 0.0
        watched, entries = self.history(row)
        bonus = self.history_bonus[entries]
        return self._rank(self.als.user_factors[row], best, candidates, k, exclude_watched, watched, bonus)

    def recommend_recent(
        self, names: list[str], k: int = 10, exclude_watched: bool = False, candidates: Candidates | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The served ranking for a viewer the model does not know, from the streamers they
        watched recently (`names`, most recent first or not: order is ignored; repeats count).
        Their ALS vector is solved against the trained streamer factors (implicit's
        recalculate_user); the recent streamers count as sessions just watched. Candidates: the
        catalog plus the recent streamers, or `candidates` if given. None if no name is known."""
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
        _, w = self.linear["all"]
        total = np.full(len(items), float(counts.sum()))
        bonus = history_features(counts, counts, total, total, np.zeros(len(items))) @ w[HISTORY]
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
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `candidates` for one user vector by the served ranker. `watched` (sorted
        streamer rows) get their history terms `bonus` added, or are left out with
        exclude_watched (the `new` ranker)."""
        name = "new" if exclude_watched else "all"
        c, w = self.linear[name]
        scores = candidates.factors @ vector
        scores *= float(w[ALS] - w[GAP])
        scores += float(c + w[GAP] * best)
        scores += candidates.pop[name]
        pos = np.searchsorted(candidates.rows, watched)
        hit = pos < len(candidates.rows)
        hit[hit] = candidates.rows[pos[hit]] == watched[hit]
        if exclude_watched:
            scores[pos[hit]] = -np.inf
        else:
            scores[pos[hit]] += bonus[hit]
        top = top_n(scores, k)
        top = top[np.isfinite(scores[top])]
        return candidates.rows[top], scores[top]

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
        return source, list(zip(self.streamers.ids[rows].tolist(), scores.astype(float).tolist(), strict=True))

    # --- persistence ---------------------------------------------------------------------

    def to_payload(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": self.metadata,
            "als": self.als,
            "user_ids": self.users.ids,
            "streamer_ids": self.streamers.ids,
            "history": {
                "indptr": self.count.indptr,
                "indices": self.count.indices,
                "count": self.count.data,
                "watch_time": self.watch_time.data,
                "last_seen": self.last_seen.data,
            },
            "popularity": self.popularity,
            "popular_ranking": self.popular_ranking,
            "catalog": self.catalog,
            "time_max": int(self.time_max),
            "time_span": int(self.time_span),
            "rankers": {name: w.to_dict() for name, w in self.rankers.items()},
            "lists": {name: {"ids": ids, "scores": scores} for name, (ids, scores) in self.lists.items()},
            "best_als": self.best_als,
            "strength": self.strength,
        }

    @classmethod
    def from_payload(cls, payload: dict) -> Recommender:
        users, streamers = IdMap(payload["user_ids"]), IdMap(payload["streamer_ids"])
        h = payload["history"]
        shape = (len(users), len(streamers))

        def csr(data: np.ndarray) -> sp.csr_matrix:
            return sp.csr_matrix((data, h["indices"], h["indptr"]), shape=shape)

        return cls(
            als=payload["als"],
            users=users,
            streamers=streamers,
            count=csr(h["count"]),
            watch_time=csr(h["watch_time"]),
            last_seen=csr(h["last_seen"]),
            popularity=payload["popularity"],
            popular_ranking=payload["popular_ranking"],
            catalog=payload["catalog"],
            time_max=payload["time_max"],
            time_span=payload["time_span"],
            rankers={name: RankerWeights.from_dict(d) for name, d in payload["rankers"].items()},
            metadata=payload["metadata"],
            lists={name: (d["ids"], d["scores"]) for name, d in payload["lists"].items()},
            best_als=payload["best_als"],
            strength=payload["strength"],
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def check_writable(path: str | Path) -> None:
    """Fail before any training time is spent if the model cannot be written to `path`."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: expected a model file path; found a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the model there ({exc.strerror or exc})") from None


def save_model(model: Recommender, path: str | Path) -> int:
    """Write atomically: a temp file beside the target, fsync, rename. Returns bytes written.
    A crash or an error midway leaves any previous file exactly as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(model.to_payload(), f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return size


def load_model(path: str | Path) -> Recommender:
    """Read a model file; any problem is a ModelError naming the path and what to do."""
    path = Path(path)
    fix = "train one with: python als_fit.py"
    if not path.exists():
        raise ModelError(f"no model file at {path}; {fix}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file; {fix}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} ({exc.strerror or exc}); {fix}") from None
    try:
        payload = _AllowListUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        if "refusing" in str(exc):
            raise ModelError(f"{path} is not a trusted model file ({_one_line(exc)}); {fix}") from None
        raise ModelError(f"{path} is truncated or not a model file ({_one_line(exc)}); {fix}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to decode means "not a model file"
        raise ModelError(
            f"{path} is truncated or not a model file ({type(exc).__name__}: {_one_line(exc)}); {fix}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path} is not a model file of this service; {fix}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path} has model format version {payload.get('format_version')!r}, this service reads "
            f"version {FORMAT_VERSION}; {fix}"
        )
    try:
        return Recommender.from_payload(payload)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ModelError(
            f"{path} is an incomplete model file ({type(exc).__name__}: {_one_line(exc)}); {fix}"
        ) from None

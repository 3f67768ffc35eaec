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
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from interactions import IdMap
from ranking import ALS_CANDIDATES, FEATURES, POPULAR_CANDIDATES, RECENCY_SCALE, RankerWeights, top_n

FORMAT = "streamer-recommender"
FORMAT_VERSION = 1
PERSONAL, POPULAR = "personal", "popular"

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
    catalog: np.ndarray  # streamer rows that ALS may propose (enough viewers to be worth it)
    time_max: int
    time_span: int
    rankers: dict[str, RankerWeights]  # "all" (served default) and "new" (exclude_watched)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_totals = np.asarray(self.count.sum(axis=1)).ravel()
        self.user_watch_totals = np.asarray(self.watch_time.sum(axis=1)).ravel()
        self._pop_feature = (np.log1p(self.popularity) / max(np.log1p(self.popularity.max(initial=0.0)), 1e-9)).astype(
            np.float32
        )
        self._catalog_factors = np.ascontiguousarray(self.als.item_factors[self.catalog])

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

    def candidates(self, row: int, exclude_watched: bool, k: int) -> np.ndarray:
        """History (unless excluded), top ALS streamers and popular ones; at least k when the
        catalog allows it."""
        watched, _ = self.history(row)
        als_scores = self._catalog_factors @ self.als.user_factors[row]
        als_rows = self.catalog[top_n(als_scores, ALS_CANDIDATES + len(watched))]
        pop_rows = self.popular_ranking[: max(POPULAR_CANDIDATES, k) + len(watched)]
        parts = [als_rows, pop_rows] if exclude_watched else [watched, als_rows, pop_rows]
        cands = np.concatenate(parts)
        _, first = np.unique(cands, return_index=True)
        cands = cands[np.sort(first)]
        if exclude_watched and len(watched):
            cands = cands[~np.isin(cands, watched, assume_unique=True)]
        return cands

    def features(self, row: int, cands: np.ndarray) -> np.ndarray:
        """One row of FEATURES per candidate streamer (see ranking.py)."""
        watched, entries = self.history(row)
        x = np.zeros((len(cands), len(FEATURES)), dtype=np.float64)
        if len(watched):
            pos = np.minimum(np.searchsorted(watched, cands), len(watched) - 1)
            seen = watched[pos] == cands
            e = np.arange(entries.start, entries.stop)[pos[seen]]
            count = self.count.data[e]
            x[seen, 0] = 1.0
            x[seen, 1] = np.log1p(count)
            x[seen, 2] = count / max(self.user_totals[row], 1e-9)
            x[seen, 3] = self.watch_time.data[e] / max(self.user_watch_totals[row], 1e-9)
            age = (self.time_max - self.last_seen.data[e]) / max(self.time_span, 1)
            x[seen, 4] = np.exp(-age / RECENCY_SCALE)
        als = self.als.item_factors[cands] @ self.als.user_factors[row]
        x[:, 5] = als
        rank = np.empty(len(cands))
        rank[np.argsort(-als, kind="stable")] = np.arange(len(cands))
        x[:, 6] = np.log1p(rank)
        x[:, 7] = self._pop_feature[cands]
        return x

    def recommend(self, row: int, k: int = 10, exclude_watched: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k streamer rows and ranker scores for a known user row."""
        cands = self.candidates(row, exclude_watched, k)
        scores = self.rankers["new" if exclude_watched else "all"].score(self.features(row, cands))
        best = top_n(scores, k)
        return cands[best], scores[best]

    def recommend_popular(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        rows = self.popular_ranking[:k]
        return rows, self.popularity[rows]

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

"""From sessions to the users x streamers matrix: id maps, per-pair aggregates, strength.

Every (user, streamer) pair seen in the sessions becomes one stored entry holding
- `count`: the number of sessions (repeat viewing is most of the viewing);
- `watch_time`: the summed session lengths, in the data's time unit;
- `last_seen`: the latest `time_end`, for recency;
- `recent`: how many of the viewer's last RECENT_SESSIONS sessions were with the streamer;
- `decayed`: the sessions weighted by exp(-age / (DECAY_SCALE * the log's span)), age measured
  from the log's end: three sessions this week outweigh thirty a month ago.
`recent` and `decayed` are ranker inputs at training time; model files do not keep them.
The ALS input is one `strength` computed from those (see STRENGTHS).
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from streamrec.data.sessions import END, INTEGER, START, STREAMER, UID, Sessions, read_sessions

# How a pair's sessions become one ALS interaction strength; `--strength` picks one.
RECENT_SESSIONS = 10  # the viewer's latest sessions `recent` counts
DECAY_SCALE = 0.1  # share of the log's span over which `decayed` falls by e (about 4 days on Twitch's 43)

STRENGTHS = {
    "sessions": lambda count, watch: count,
    "log_sessions": lambda count, watch: np.log1p(count),
    "watch_time": lambda count, watch: watch,
    "log_watch_time": lambda count, watch: np.log1p(watch),
    "binary": lambda count, watch: np.ones_like(count),
}


class IdMap:
    """External ids (always str: uid 42 in a file is user "42" in a URL) <-> contiguous rows.

    Held as flat arrays, so that a model file can map them and every worker shares one copy:
    `blob` is the UTF-8 of every id back to back, id `r` spanning `offsets[r]:offsets[r + 1]`;
    `keys` is the CRC-32 of every id, sorted, and `order` the row of each key. A lookup is one
    CRC, one binary search and a byte comparison per id with the same CRC (CRC-32 collides for
    about a hundred pairs in a million ids; the comparison makes that harmless). A Python dict
    would cost ~130 MB per million ids in every worker and a second to build at startup.
    """

    ARRAYS = ("blob", "offsets", "keys", "order")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, keys: np.ndarray, order: np.ndarray):
        """A map over arrays made by `arrays()` (a loaded model file's)."""
        self.__dict__.update(blob=blob, offsets=offsets, keys=keys, order=order)
        self._n = len(offsets) - 1

    @classmethod
    def from_ids(cls, ids) -> IdMap:
        """A map of the given ids, in their order. Raises ValueError if an id repeats. Training
        looks ids up in bulk through a pandas index; the flat arrays are built when first needed
        (a model file, a lookup by `get`)."""
        index = pd.Index([str(i) for i in ids], dtype=object)
        if not index.is_unique:
            raise ValueError("IdMap ids must be unique")
        out = cls.__new__(cls)
        out.__dict__.update(index=index, ids=index.to_numpy())
        out._n = len(index)
        return out

    @cached_property
    def _encoded(self) -> list[bytes]:
        return [_utf8(s) for s in self.ids]

    @cached_property
    def _packed(self) -> tuple[np.ndarray, np.ndarray]:
        return pack(self._encoded)

    @cached_property
    def blob(self) -> np.ndarray:
        return self._packed[0]

    @cached_property
    def offsets(self) -> np.ndarray:
        return self._packed[1]

    @cached_property
    def _crc(self) -> np.ndarray:
        return np.fromiter(map(zlib.crc32, self._encoded), dtype=np.uint32, count=self._n)

    @cached_property
    def order(self) -> np.ndarray:
        return np.argsort(self._crc, kind="stable").astype(np.int64)

    @cached_property
    def keys(self) -> np.ndarray:
        return self._crc[self.order]

    @cached_property
    def _raw(self) -> memoryview:
        return np.ascontiguousarray(self.blob).data.cast("B")

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    def __len__(self) -> int:
        return self._n

    def name(self, row: int) -> str:
        return self.raw(row).decode("utf-8", "surrogatepass")

    def raw(self, row: int) -> bytes:
        _, _, offsets = self._views
        return bytes(self._raw[offsets[row] : offsets[row + 1]])

    @cached_property
    def _views(self) -> tuple[memoryview, memoryview, memoryview]:
        """keys, order and offsets as memoryviews: indexing one gives a Python int in tens of
        nanoseconds, and `bisect` searches one in C (a lookup in half the time numpy takes)."""

        def view(a: np.ndarray) -> memoryview:
            return np.ascontiguousarray(a).data.cast("B")

        return view(self.keys).cast("I"), view(self.order).cast("q"), view(self.offsets).cast("q")

    def get(self, external: str) -> int | None:
        """The row of one id, or None. Ids are strings: the int 42 is not the id "42"."""
        if not isinstance(external, str):
            return None
        b = _utf8(external)
        crc = zlib.crc32(b)
        keys, order, offsets = self._views
        raw = self._raw
        i = bisect.bisect_left(keys, crc)
        while i < len(keys) and keys[i] == crc:
            row = order[i]
            if raw[offsets[row] : offsets[row + 1]] == b:
                return row
            i += 1
        return None

    @cached_property
    def ids(self) -> np.ndarray:
        """Every id as str, by row (built on first use: bulk work in training and evaluation)."""
        return np.array([self.name(r) for r in range(len(self))], dtype=object)

    @cached_property
    def index(self) -> pd.Index:
        return pd.Index(self.ids, dtype=object)

    def rows(self, externals) -> np.ndarray:
        """Rows of the given ids, -1 for unknown ones. A categorical Series is looked up once per
        distinct value. A map built in this process has a hash index; a loaded one looks ids up
        one by one (4 us each) rather than build an index of every id in a serving worker."""
        if isinstance(externals, pd.Series) and isinstance(externals.dtype, pd.CategoricalDtype):
            per_category = self.category_rows(externals.cat.categories)
            codes = externals.cat.codes.to_numpy()
            return np.where(codes >= 0, per_category[codes], -1)
        if "index" not in self.__dict__:
            return np.array([-1 if (r := self.get(str(e))) is None else r for e in externals], dtype=np.int64)
        values = pd.Index([str(e) for e in externals], dtype=object)
        return self.index.get_indexer(values).astype(np.int64)

    def category_rows(self, categories: pd.Index) -> np.ndarray:
        """Rows of a categorical's categories. Remembered for the last categories seen: the
        slices of one session log (the validation period, the popularity window) share them, and
        a million ids take a second to look up."""
        memo = self.__dict__.get("_categories")
        if memo is None or memo[0] is not categories:
            memo = self.__dict__["_categories"] = (categories, self.rows(categories))
        return memo[1]


def pack(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(blob, offsets): byte strings back to back, string r at blob[offsets[r]:offsets[r + 1]]."""
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _utf8(s: str) -> bytes:
    # surrogatepass: any str a URL or a file can carry has bytes, even a lone surrogate
    return s.encode("utf-8", "surrogatepass")


@dataclass
class Interactions:
    """Per-pair aggregates as a users x streamers CSR structure (rows = users)."""

    users: IdMap
    streamers: IdMap
    count: sp.csr_matrix  # float32 session counts
    watch_time: sp.csr_matrix  # float32, same sparsity pattern as count
    last_seen: sp.csr_matrix  # float64 latest time_end, same pattern
    time_min: int
    time_max: int
    recent: sp.csr_matrix | None = None  # float32 sessions among the viewer's last RECENT_SESSIONS
    decayed: sp.csr_matrix | None = None  # float32 sessions weighted exp(-age / (DECAY_SCALE * span))

    @property
    def shape(self) -> tuple[int, int]:
        return self.count.shape

    @property
    def nnz(self) -> int:
        return self.count.nnz

    def strength(self, kind: str) -> sp.csr_matrix:
        """The users x streamers ALS input for one of STRENGTHS, float32."""
        if kind not in STRENGTHS:
            raise ValueError(f"strength must be one of {', '.join(STRENGTHS)}; got {kind!r}")
        data = STRENGTHS[kind](self.count.data.astype(np.float64), self.watch_time.data.astype(np.float64))
        out = self.count.copy()
        out.data = np.asarray(data, dtype=np.float32)
        return out


def row_pointers(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """The CSR `indptr` (int64) of entries sorted by row: every CSR matrix of the project is built on it."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def csr_from_entries(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray, **data: np.ndarray) -> dict:
    """CSR matrices sharing one pattern from distinct (row, col) entries in any order: name -> matrix."""
    order = np.lexsort((cols, rows))
    indptr = row_pointers(rows, n_rows)
    indices = cols[order].astype(np.int32)
    return {k: sp.csr_matrix((v[order], indices, indptr), shape=(n_rows, n_cols)) for k, v in data.items()}


def extra_length(time_format: str) -> float:
    """What a session's watch time adds to time_end - time_start, on either engine. Integer times
    count inclusive crawl rounds (the Twitch file records a viewer seen in one round as start ==
    end), so they get one extra unit; timestamps none."""
    return 1.0 if time_format == INTEGER else 0.0


def session_lengths(frame: pd.DataFrame, time_format: str) -> np.ndarray:
    """Watch time of each session (see extra_length)."""
    length = (frame[END].to_numpy() - frame[START].to_numpy()).astype(np.float64)
    return length + extra_length(time_format)


def _encode(column: pd.Series, ids: IdMap | None) -> tuple[np.ndarray, IdMap]:
    """Row numbers for a column of ids: in `ids` when given (-1 for unknown), else in a new map of
    the ids present, in order of first appearance."""
    if ids is not None:
        return ids.rows(column), ids
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Factorise the integer codes, not the strings: categories may include unused ids.
        codes, used = pd.factorize(column.cat.codes.to_numpy(), sort=False)
        return codes, IdMap.from_ids(column.cat.categories[used])
    codes, uniques = pd.factorize(column, sort=False)
    return codes, IdMap.from_ids(uniques)


def _last_sessions(viewer: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """Positions of each viewer's last `n` sessions by start. Logs usually come sorted by viewer,
    then time (the Twitch file does); only a log that is not gets sorted."""
    same = viewer[1:] == viewer[:-1]
    in_order = bool(np.all(viewer[1:] >= viewer[:-1])) and bool(np.all(~same | (start[1:] >= start[:-1])))
    del same
    order = None if in_order else np.lexsort((start, viewer))
    ordered = viewer if order is None else viewer[order]
    past_last = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, len(ordered))  # one past each's last
    first = np.concatenate([[0], past_last[:-1]])
    picks = np.concatenate([(past_last - k)[past_last - k >= first] for k in range(1, n + 1)])
    return picks if order is None else order[picks]


def aggregate(
    sessions: Sessions | pd.DataFrame,
    time_format: str | None = None,
    users: IdMap | None = None,
    streamers: IdMap | None = None,
    log_span: tuple[int, int] | None = None,
) -> Interactions:
    """Aggregate sessions per (user, streamer) pair.

    With `users`/`streamers` given, rows follow those maps and sessions of ids outside them are
    left out (used to build test-period matrices aligned with a trained model). `log_span`:
    (first, last time) of the whole log when `sessions` are its newest part (an update): the
    time-decayed counts then decay against that log's end and over its span.
    """
    if isinstance(sessions, Sessions):
        frame, time_format = sessions.frame, sessions.time_format
    else:
        frame = sessions
    assert time_format is not None
    codes_u, users = _encode(frame[UID], users)
    codes_s, streamers = _encode(frame[STREAMER], streamers)
    keep = (codes_u >= 0) & (codes_s >= 0)
    lengths = session_lengths(frame, time_format)[keep]
    ends = frame[END].to_numpy()[keep]
    codes_u, codes_s = codes_u[keep], codes_s[keep]

    n_users, n_streamers = len(users), len(streamers)
    # One key per pair; sorting by it gives CSR order (row-major) directly. A stable sort: logs
    # usually come grouped by viewer, and timsort takes those runs in stride (2x a quicksort).
    key = codes_u.astype(np.int64) * n_streamers + codes_s
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.empty(0, np.int64)
    uniq = key[starts]
    count = np.diff(np.append(starts, len(key))).astype(np.float32)
    if len(starts):
        watch = np.add.reduceat(lengths[order], starts).astype(np.float32)
        last = np.maximum.reduceat(ends[order].astype(np.float64), starts)
    else:
        watch, last = np.empty(0, np.float32), np.empty(0, np.float64)
    rows, cols = uniq // n_streamers, (uniq % n_streamers).astype(np.int32)
    indptr = row_pointers(rows, n_users)
    shape = (n_users, n_streamers)

    def csr(data: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((data, cols, indptr), shape=shape)

    times = frame[[START, END]].to_numpy()
    time_min = int(times.min()) if len(times) else 0
    time_max = int(times.max()) if len(times) else 0
    if log_span is not None:  # a part of a longer log: decay against that log's end and span
        time_min, time_max = log_span
    # Momentum: which pair each session belongs to, then each viewer's last RECENT_SESSIONS
    # sessions (by start) and every session weighted by how long ago it ended. At a million
    # viewers these arrays are 30M long: int32 where it fits, the weights in blocks.
    entry = np.empty(len(key), dtype=np.int32 if len(starts) < 2**31 else np.int64)
    entry[order] = np.repeat(np.arange(len(starts), dtype=entry.dtype), np.diff(np.append(starts, len(key))))
    del order, key
    last_few = _last_sessions(codes_u, frame[START].to_numpy()[keep], RECENT_SESSIONS)
    recent = np.bincount(entry[last_few], minlength=len(starts)).astype(np.float32)
    del last_few
    scale = DECAY_SCALE * max(time_max - time_min, 1)
    decayed = np.zeros(len(starts))
    for lo in range(0, len(entry), 1 << 22):
        weights = np.exp(-(time_max - ends[lo : lo + (1 << 22)]) / scale)
        decayed += np.bincount(entry[lo : lo + (1 << 22)], weights=weights, minlength=len(starts))
    return Interactions(
        users=users,
        streamers=streamers,
        count=csr(count),
        watch_time=csr(watch),
        last_seen=csr(last),
        time_min=time_min,
        time_max=time_max,
        recent=csr(recent),
        decayed=csr(decayed.astype(np.float32)),
    )


def process_data(path) -> Interactions:
    """A sessions file as the users x streamers matrices: `sessions.read_sessions` (validation,
    drop rules) then `aggregate`. The founding description's name for this step; training runs
    it inside `training.train`."""
    return aggregate(read_sessions(path))

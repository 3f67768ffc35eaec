"""The served ranking: a small logistic ranker over a viewer's own history, ALS and popularity,
with weights learned on a validation period, applied to every (viewer, streamer) pair in batch.

Why: on live-streaming data most viewing is repeat viewing, so "the viewer's own most-watched
streamers" beats plain ALS, while ALS is far better than popularity at finding new streamers
(on a real Twitch sample, 78% of the streamers watched in the last tenth of the time had been
watched before; the viewer's own list scored NDCG@10 0.56, plain ALS 0.39, and on streamers never
watched ALS 0.20 against popularity's 0.06). The ranker puts both on one scale with features that
are unit-free, so the same weights work for integer steps and for timestamps:

- watched:        1 if the viewer watched the streamer before, else 0
- log_count:      log(1 + sessions with the streamer)
- count_share:    sessions with the streamer / all the viewer's sessions
- watch_share:    watch time with the streamer / all the viewer's watch time
- recency:        exp(-age / 5% of the log's span), age = time since last watched; 0 if never
- recent_share:   share of the viewer's last 10 sessions that were with the streamer
- log_decayed:    log(1 + sessions weighted by exp(-age / 10% of the span)): momentum, where
                  log_count is loyalty
- als:            the ALS score (user factors . streamer factors)
- als_gap:        the viewer's best ALS score over the catalog minus this one: ALS scores sit on
                  a different scale for every viewer, the gap to their best does not
- popularity:     log(1 + recent distinct viewers), scaled to [0, 1]

Two weight vectors are learned: `all` (the default ranking) and `new` (the discovery ranking
behind exclude_watched, trained on never-watched pairs only).

Because the scorer is linear, a viewer's score for every catalog streamer is one matrix product
plus per-streamer and per-viewer terms; the few watched pairs get their history terms added. So
`ranked_lists` ranks the whole catalog for all viewers in batch, and serving is a lookup.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import RECENT_SESSIONS

FEATURES = (
    "watched",
    "log_count",
    "count_share",
    "watch_share",
    "recency",
    "recent_share",
    "log_decayed",
    "als",
    "als_gap",
    "popularity",
)
ALS, GAP, POP = FEATURES.index("als"), FEATURES.index("als_gap"), FEATURES.index("popularity")
SPLIT = (ALS, GAP, POP)  # the features a watched_shift may weigh differently for watched pairs
RECENCY_SCALE = 0.05  # share of the log's time span over which recency decays by e
L2 = 1.0  # ridge penalty of the logistic ranker, on standardised features
CHUNK_USERS = 256  # viewers scored per matrix product; bounds the memory of batch ranking


class RankerName(StrEnum):
    """The served rankers, as named in a model file's `rankers` and `lists`."""

    ALL = "all"  # the default list: the viewer's own streamers and new ones, on one scale
    NEW = "new"  # exclude_watched: discovery among streamers the viewer never watched
    LIVE = "live"  # live_only: the next session among the streamers live then (optional)


@dataclass
class RankerWeights:
    """A linear scorer on standardised features: score = ((x - mean) / scale) . coef + bias."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    bias: float
    learned: bool  # False when there was nothing to learn from (prior weights)
    # Raw-feature weights added for watched pairs only: a ranker that weighs ALS and popularity
    # differently for a viewer's own streamers than for new ones (the live ranker). The served
    # scorer stays one linear form on the catalog; the difference goes into the history terms.
    watched_shift: np.ndarray | None = None

    def linear(self) -> tuple[float, np.ndarray]:
        """(c, w) with score = c + x . w on raw features."""
        w = self.coef / self.scale
        return float(self.bias - self.mean @ w), w

    def score(self, x: np.ndarray) -> np.ndarray:
        c, w = self.linear()
        return c + x @ w

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "coef": self.coef.astype(np.float64),
            "bias": float(self.bias),
            "learned": bool(self.learned),
            **({} if self.watched_shift is None else {"watched_shift": self.watched_shift.astype(np.float64)}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RankerWeights:
        shift = d.get("watched_shift")
        return cls(
            np.asarray(d["mean"]),
            np.asarray(d["scale"]),
            np.asarray(d["coef"]),
            float(d["bias"]),
            bool(d["learned"]),
            None if shift is None else np.asarray(shift),
        )

    @classmethod
    def split_by_watched(cls, fitted: RankerWeights) -> RankerWeights:
        """From a ranker fitted on FEATURES plus (als, als_gap, popularity) x never-watched: the
        never-watched weights as the ranker, the difference for watched pairs as watched_shift."""
        c, w = fitted.linear()
        base, extra = w[: len(FEATURES)].copy(), w[len(FEATURES) :]
        shift = np.zeros(len(FEATURES))
        for j, col in enumerate(SPLIT):
            base[col] += extra[j]
            shift[col] = -extra[j]
        n = len(FEATURES)
        return cls(np.zeros(n), np.ones(n), base, c, fitted.learned, shift)

    @classmethod
    def prior(cls, discovery: bool = False) -> RankerWeights:
        """Used only when the validation period has nothing to learn from (a short log, or no
        viewer discovering anything in it). Weights on raw features: own history first, by
        sessions and recency (REP), then ALS; popularity only breaks ties. Discovery is ALS."""
        coef = np.zeros(len(FEATURES))
        coef[ALS], coef[POP] = 1.0, 1e-3
        if not discovery:
            coef[FEATURES.index("watched")] = 10.0
            coef[FEATURES.index("log_count")] = 1.0
            coef[FEATURES.index("recency")] = 1.0
        return cls(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), coef, 0.0, False)

    @classmethod
    def priors(cls) -> dict[str, RankerWeights]:
        """The default and discovery rankers before anything is learned (see `prior`)."""
        return {RankerName.ALL: cls.prior(), RankerName.NEW: cls.prior(discovery=True)}


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> RankerWeights:
    """L2-regularised logistic regression on standardised features (L-BFGS on the exact loss)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    w = np.ones(len(y)) if weight is None else weight
    w = w / w.sum()
    signs = 2.0 * y - 1.0

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        margin = signs * (z @ params[:-1] + params[-1])
        # log(1 + exp(-m)) computed stably; d/dm = -sigmoid(-m)
        value = np.sum(w * np.logaddexp(0.0, -margin)) + 0.5 * L2 / len(y) * params[:-1] @ params[:-1]
        g = -w * signs / (1.0 + np.exp(margin))
        grad = np.concatenate([z.T @ g + L2 / len(y) * params[:-1], [g.sum()]])
        return value, grad

    result = scipy.optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return RankerWeights(mean, scale, result.x[:-1], float(result.x[-1]), True)


def fit_logistic_split(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> RankerWeights:
    """fit_logistic with ALS score, gap and popularity weighed separately for watched pairs and
    for never-watched ones (those three features also crossed with "never watched"), returned as
    one ranker plus its watched_shift (RankerWeights.split_by_watched)."""
    never = x[:, :1] == 0  # the `watched` feature
    return RankerWeights.split_by_watched(
        fit_logistic(np.concatenate([x, x[:, list(SPLIT)] * never], axis=1), y, weight)
    )


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, best first (ties by index, so results are stable)."""
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    if len(scores) <= 256:  # a sort of a few hundred is one vectorized call: cheaper than the rest
        return np.argsort(-scores, kind="stable")[:n]
    if n < len(scores):
        # The n-th best value by a partition of the values (vectorized; an argpartition of a few
        # hundred scores costs three times as much), then every score at least that good: ties
        # at the boundary are all kept, and the lowest indices win below.
        neg = -scores
        part = np.flatnonzero(neg <= np.partition(neg, n - 1)[n - 1])
        if len(part) < n:  # NaN scores compare false: rank them as argpartition would
            part = np.argpartition(neg, n - 1)[:n]
    else:
        part = np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))[:n]]


def top_n_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the n largest scores of every row, best first (-inf entries last).

    Exact, but cheaper than partitioning every full row, which was most of the cost of ranking
    every viewer's lists: a threshold is read off a strided sample of each row (the sample's
    m-th largest, about 3n of the row above it), and only the scores above it are sorted. The
    rare row where fewer than n pass is partitioned whole on its own."""
    rows, cols = scores.shape
    n = min(n, cols)
    if n == 0 or rows == 0:
        return np.empty((rows, n), dtype=np.int64)
    every = cols // (16 * n)
    if every < 2:
        return _top_n_rows_partition(scores, n)
    sample = scores[:, ::every]
    width = sample.shape[1]
    m = min(width, max(8, -(-3 * n * width // cols)))  # >= 8: a stable quantile, rarely short
    threshold = np.partition(sample, width - m, axis=1)[:, width - m]
    r, c = np.divmod(np.flatnonzero(scores >= threshold[:, None]), cols)
    counts = np.bincount(r, minlength=rows)
    starts = np.zeros(rows, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    slot = np.arange(len(r)) - starts[r]
    values = np.full((rows, max(int(counts.max()), n)), -np.inf, dtype=scores.dtype)
    columns = np.zeros(values.shape, dtype=np.int64)
    values[r, slot] = scores[r, c]
    columns[r, slot] = c
    order = np.argsort(-values, axis=1, kind="stable")[:, :n]
    out = np.take_along_axis(columns, order, axis=1)
    short = np.flatnonzero(counts < n)
    if len(short):
        out[short] = _top_n_rows_partition(scores[short], n)
    return out


def _top_n_rows_partition(scores: np.ndarray, n: int) -> np.ndarray:
    rows, cols = scores.shape
    if n < cols:
        part = np.argpartition(scores, cols - n, axis=1)[:, cols - n :]
    else:
        part = np.tile(np.arange(cols), (rows, 1))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class Arrays(Protocol):
    """What ranking reads: arrays and sizes, never behaviour. `recommender.Recommender` is one;
    ranking does not import it, so the model can use ranking without a circle between them."""

    als: Any  # .user_factors (users x factors), .item_factors (streamers x factors), float32
    count: sp.csr_matrix  # users x streamers sessions per pair
    watch_time: sp.csr_matrix  # same pattern: summed session length
    last_seen: sp.csr_matrix  # same pattern: latest time_end
    recent: sp.csr_matrix | None  # same pattern: sessions among the viewer's last 10 (training only)
    decayed: sp.csr_matrix | None  # same pattern: time-decayed sessions (training only)
    catalog: np.ndarray  # streamer rows worth recommending to someone new to them
    best_als: np.ndarray | None  # per user: best ALS score over the catalog
    time_max: int
    time_span: int

    # Derived from the arrays above (read-only here).
    @property
    def n_users(self) -> int: ...
    @property
    def n_streamers(self) -> int: ...
    @property
    def user_totals(self) -> np.ndarray: ...  # per user: all sessions
    @property
    def user_watch_totals(self) -> np.ndarray: ...  # per user: all watch time
    @property
    def pop_feature(self) -> np.ndarray: ...  # per streamer: popularity scaled to [0, 1]
    @property
    def catalog_factors(self) -> np.ndarray: ...  # item factors of the catalog, contiguous
    @property
    def history_keys(self) -> np.ndarray: ...  # user * n_streamers + streamer per history entry, sorted
    @property
    def history_bonus(self) -> np.ndarray: ...  # the `all` ranker's history terms per history entry


HISTORY = slice(0, 7)  # the history features: zero for a streamer the viewer never watched


def history_features(
    count: np.ndarray,
    watch: np.ndarray,
    user_total: np.ndarray,
    user_watch_total: np.ndarray,
    age: np.ndarray,
    recent: np.ndarray,
    decayed: np.ndarray,
) -> np.ndarray:
    """The HISTORY columns of FEATURES for watched pairs; `age` as a share of the log's span,
    `recent` the pair's sessions among the viewer's last RECENT_SESSIONS, `decayed` its
    time-decayed sessions."""
    x = np.empty((len(count), HISTORY.stop), dtype=np.float64)
    x[:, 0] = 1.0
    x[:, 1] = np.log1p(count)
    x[:, 2] = count / np.maximum(user_total, 1e-9)
    x[:, 3] = watch / np.maximum(user_watch_total, 1e-9)
    x[:, 4] = np.exp(-age / RECENCY_SCALE)
    x[:, 5] = recent / np.maximum(np.minimum(user_total, RECENT_SESSIONS), 1e-9)
    x[:, 6] = np.log1p(decayed)
    return x


def entry_history_features(model: Arrays, entries: np.ndarray, users: np.ndarray) -> np.ndarray:
    """HISTORY features of history entries (positions in the CSR data) of the given users. Needs
    the training-time aggregates (`recent`, `decayed`): a loaded model keeps the results."""
    if model.recent is None or model.decayed is None:
        raise RuntimeError("history features need the training-time aggregates; a loaded model stores their terms")
    age = (model.time_max - model.last_seen.data[entries]) / max(model.time_span, 1)
    return history_features(
        model.count.data[entries],
        model.watch_time.data[entries],
        model.user_totals[users],
        model.user_watch_totals[users],
        age,
        model.recent.data[entries],
        model.decayed.data[entries],
    )


def pair_features(
    model: Arrays, users: np.ndarray, items: np.ndarray, best: np.ndarray, history: bool = True
) -> np.ndarray:
    """FEATURES for (users[j], items[j]) pairs; `best[j]` is users[j]'s best catalog ALS score.
    With history=False the HISTORY columns stay zero (the caller adds stored history terms)."""
    x = np.zeros((len(users), len(FEATURES)), dtype=np.float64)
    if len(users) == 0:
        return x
    if history:
        keys = users.astype(np.int64) * model.n_streamers + items
        pos = np.minimum(np.searchsorted(model.history_keys, keys), len(model.history_keys) - 1)
        seen = model.history_keys[pos] == keys
        x[seen, HISTORY] = entry_history_features(model, pos[seen], users[seen])
    als = np.einsum("ij,ij->i", model.als.user_factors[users], model.als.item_factors[items])
    x[:, ALS] = als
    x[:, GAP] = best - als
    x[:, POP] = model.pop_feature[items]
    return x


def catalog_scores(model: Arrays, rows: np.ndarray) -> np.ndarray:
    """ALS scores of `rows` against the catalog: a (len(rows), len(catalog)) float32 matrix."""
    return model.als.user_factors[rows] @ model.catalog_factors.T


def row_entries(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of CSR rows `rows` (an int array), row by row: (each entry's position in
    `rows`, its index in the matrix's data)."""
    counts = (indptr[rows + 1] - indptr[rows]).astype(np.int64)
    local = np.repeat(np.arange(len(rows)), counts)
    # each row's entries: its start, plus its place among them
    starts = np.repeat(indptr[rows].astype(np.int64) - np.cumsum(counts) + counts, counts)
    return local, starts + np.arange(int(counts.sum()))


def ranked_lists(
    model: Arrays,
    rankers: dict[str, RankerWeights],
    n: int,
    among: np.ndarray | None = None,
    done: Callable[[int], object] | None = None,
    bonus: np.ndarray | None = None,
    stop: Callable[[], bool] | None = None,
    threads: int | None = None,
    rows: np.ndarray | None = None,
    watched_out: np.ndarray | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Every user's top-n streamers by each ranker: {"all": (ids, scores), "new": ...}, arrays of
    shape (n_users, n), best first, short rows padded with id -1 and score -inf; and every
    user's best ALS score over the catalog.

    `bonus` holds `rankers["all"]`'s history terms per history entry (default
    `model.history_bonus`, the model's own `all` ranker's). Candidates are the catalog
    plus every watched streamer for `all`, and the catalog minus
    watched streamers for `new` (exclude_watched); with `among` (sorted streamer rows, e.g. the
    live ones), only those. One matrix product per chunk of users serves both rankers. `done(n)`
    is called as each chunk of n users is ranked (progress). `stop()` true: the chunks not yet
    started are skipped (the lists are then incomplete: the caller asked for that). `threads`:
    chunks ranked at once (default: one per core). `rows`: rank only these users (sorted rows; an
    update re-ranks the viewers whose inputs changed): the other rows stay padded, and their best
    ALS score 0. `watched_out` (one float32 per history entry): the `all` ranker's score of each
    ranked viewer's own streamers is written there."""
    catalog = model.catalog if among is None else among
    catalog_factors = model.catalog_factors if among is None else np.ascontiguousarray(model.als.item_factors[among])
    catalog_pos = np.full(model.n_streamers, -1, dtype=np.int64)
    catalog_pos[catalog] = np.arange(len(catalog))
    linear = {name: w.linear() for name, w in rankers.items()}
    pop_terms = {name: (w[POP] * model.pop_feature[catalog]).astype(np.float32) for name, (_, w) in linear.items()}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (RankerName.ALL, RankerName.NEW):
        width = min(n, len(catalog) + (model.n_streamers if name == RankerName.ALL and among is None else 0))
        out[name] = (
            np.full((model.n_users, width), -1, np.int32),
            np.full((model.n_users, width), -np.inf, np.float32),
        )
    indptr, indices = model.count.indptr, model.count.indices
    best_all = np.zeros(model.n_users, dtype=np.float32)
    bonus = model.history_bonus if bonus is None else bonus
    # Weights on watched pairs' non-history features: the ranker's, plus its watched_shift.
    watched_w = {
        name: w if rankers[name].watched_shift is None else w + rankers[name].watched_shift
        for name, (_, w) in linear.items()
    }

    def rank_chunk(lo: int) -> None:
        if stop is not None and stop():
            return
        if rows is None:
            hi = min(lo + CHUNK_USERS, model.n_users)
            chunk: slice | np.ndarray = slice(lo, hi)
            local = np.repeat(np.arange(hi - lo), np.diff(indptr[lo : hi + 1]))  # watched pairs of the chunk
            entries: slice | np.ndarray = slice(indptr[lo], indptr[hi])
        else:
            chunk = rows[lo : lo + CHUNK_USERS]
            local, entries = row_entries(indptr, chunk)
        s = model.als.user_factors[chunk] @ catalog_factors.T
        if among is None:
            best = s.max(axis=1) if s.shape[1] else np.zeros(s.shape[0], np.float32)
            best_all[chunk] = best
        else:
            assert model.best_als is not None, "rank the catalog first (among=None)"
            best = model.best_als[chunk]
        wu = local + lo if rows is None else np.asarray(chunk)[local]  # the watched pairs' user rows
        wi = indices[entries].astype(np.int64)
        in_cat = catalog_pos[wi] >= 0
        at = (local[in_cat], catalog_pos[wi[in_cat]])
        for name, (ids, scores) in out.items():
            c, w = linear[name]
            # Python floats keep the float32 matrix float32 (NumPy 2 promotion rules).
            dense = s * float(w[ALS] - w[GAP])
            dense += (c + w[GAP] * best).astype(np.float32)[:, None]
            dense += pop_terms[name]
            if name == RankerName.NEW:
                dense[at] = -np.inf
                extra = None
            else:
                # Watched pairs: their history terms are stored ones (`bonus`), so a loaded model
                # ranks them as training did.
                rest = pair_features(model, wu, wi, best[local], history=False) @ watched_w[name]
                full = (c + rest + bonus[entries]).astype(np.float32)
                if watched_out is not None and name == RankerName.ALL:
                    watched_out[entries] = full
                dense[at] = full[in_cat]
                outside = ~in_cat if among is None else np.zeros(len(wi), dtype=bool)
                extra = (local[outside], wi[outside], full[outside])
            top = top_n_rows(dense, min(ids.shape[1], dense.shape[1]))
            top_ids = catalog[top]
            top_scores = np.take_along_axis(dense, top, axis=1)
            if extra is not None and len(extra[0]):
                top_ids, top_scores = merge_extra(top_ids, top_scores, *extra, width=ids.shape[1])
            k = top_ids.shape[1]
            ids[chunk, :k] = np.where(np.isfinite(top_scores), top_ids, -1)
            scores[chunk, :k] = top_scores
        if done is not None:
            done(s.shape[0])

    # numpy's products, partitions and ufuncs release the GIL: chunks run on all cores, each
    # writing its own rows, with BLAS held to one thread per chunk to avoid oversubscription.
    starts = range(0, model.n_users if rows is None else len(rows), CHUNK_USERS)
    with threadpool_limits(1, "blas"):
        if threads == 1:  # in the calling thread (a serving worker's background thread)
            for lo in starts:
                rank_chunk(lo)
        else:
            with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
                list(pool.map(rank_chunk, starts))
    return out, best_all


def _best_first(item: tuple[float, int]) -> float:
    return -item[0]


def merge_stored(
    ids: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray,
    own: np.ndarray,
    own_scores: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stored lists (one per row of `ids`/`scores`: best first, -1/-inf past their end) of viewers
    whose own streamers' scores changed and nothing else: each viewer's own streamers (`own`, of
    list row `rows`, rows ascending) taken out and merged back in at `own_scores`, `width` kept.
    The never-watched part keeps its order and scores; a never-watched streamer left off a stored
    list scored at most its last score, so a merged list is exact when its `width`-th score is at
    least that, or when the stored list was not full (it held every candidate there was).
    (ids, scores, exact per row); an inexact row must be ranked again."""
    if len(ids) == 1:  # one viewer (a request): the same merge on Python lists, a tenth of the array steps' cost
        mine = set(own.tolist())
        merged = [(s, i) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0 and i not in mine]
        merged += zip(own_scores.astype(np.float32).tolist(), own.tolist(), strict=True)
        merged.sort(key=_best_first)  # stable: ties keep the stored order, then the own streamers' order
        merged = [m for m in merged[:width] if m[0] > -math.inf]
        merged_ids = np.full((1, width), -1, dtype=np.int64)
        merged_scores = np.full((1, width), -np.inf, dtype=np.float32)
        if merged:
            merged_scores[0, : len(merged)], merged_ids[0, : len(merged)] = zip(*merged, strict=True)
        exact = ids[0, -1] < 0 or (len(merged) == width and merged[-1][0] >= float(scores[0, -1]))
        return merged_ids, merged_scores, np.array([exact])
    n = int(max(ids.max(initial=-1), own.max(initial=-1))) + 1
    ids = ids.astype(np.int64)
    own_keys = np.sort(rows.astype(np.int64) * n + own)
    keys = np.arange(len(ids), dtype=np.int64)[:, None] * n + np.maximum(ids, 0)
    pos = np.minimum(np.searchsorted(own_keys, keys), max(len(own_keys) - 1, 0))
    listed_own = (ids >= 0) & (own_keys[pos] == keys) if len(own_keys) else np.zeros(ids.shape, dtype=bool)
    never_ids, never_scores = np.where(listed_own, -1, ids), np.where(listed_own, -np.inf, scores).astype(np.float32)
    if len(own):  # each row's own streamers after its stored part, then a stable sort: ties keep that order
        slot = np.arange(len(rows)) - np.searchsorted(rows, rows)
        pad_ids = np.full((len(ids), slot.max() + 1), -1, dtype=np.int64)
        pad_scores = np.full(pad_ids.shape, -np.inf, dtype=np.float32)
        pad_ids[rows, slot], pad_scores[rows, slot] = own, own_scores
        never_ids = np.concatenate([never_ids, pad_ids], axis=1)
        never_scores = np.concatenate([never_scores, pad_scores], axis=1)
    order = np.argsort(-never_scores, axis=1, kind="stable")[:, :width]
    merged_ids, merged_scores = np.take_along_axis(never_ids, order, 1), np.take_along_axis(never_scores, order, 1)
    if merged_ids.shape[1] < width:
        pad = width - merged_ids.shape[1]
        merged_ids = np.pad(merged_ids, ((0, 0), (0, pad)), constant_values=-1)
        merged_scores = np.pad(merged_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    full = ids[:, -1] >= 0
    exact = ~full | (merged_scores[:, width - 1] >= scores[:, -1])
    merged_ids = np.where(np.isfinite(merged_scores), merged_ids, -1)
    return merged_ids, merged_scores, exact


def merge_extra(
    top_ids: np.ndarray,
    top_scores: np.ndarray,
    rows: np.ndarray,
    items: np.ndarray,
    item_scores: np.ndarray,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Add per-row extra candidates (rows sorted ascending) to sorted top lists; keep `width`."""
    first = np.searchsorted(rows, rows)
    slot = np.arange(len(rows)) - first
    pad_ids = np.full((top_ids.shape[0], slot.max() + 1), -1, dtype=np.int64)
    pad_scores = np.full(pad_ids.shape, -np.inf, dtype=np.float32)
    pad_ids[rows, slot] = items
    pad_scores[rows, slot] = item_scores
    all_ids = np.concatenate([top_ids, pad_ids], axis=1)
    all_scores = np.concatenate([top_scores, pad_scores], axis=1)
    best = top_n_rows(all_scores, min(width, all_scores.shape[1]))
    return np.take_along_axis(all_ids, best, axis=1), np.take_along_axis(all_scores, best, axis=1)

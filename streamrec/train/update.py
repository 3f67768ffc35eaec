"""Incremental updates: a model file and the sessions logged since, merged without a retrain.

    python als_fit.py --update --data sessions_today.csv [--model models/model.pkl]
    python als_fit.py --update --events      # the sessions of the event log (POST /events)

What an update does, against a full retrain on the whole log:
- the same id numbering, extended: viewers and streamers already known keep their rows, new
  ones are appended in order of first appearance;
- the viewing history merged pair by pair: sessions and watch time added, last seen the later;
  a session the model already counted is left out (its pair was last seen at or after its end:
  the sessions log's duplicate rule, per pair and across files);
- the momentum counts carried forward: the time-decayed sessions decay by the time that passed
  (each session keeps the decay scale of the model it entered), and a viewer's share of the last
  10 sessions gives way to the new sessions in proportion;
- then only what the new sessions touch is recomputed (`_incremental`, the default): the factors
  of the viewers with new sessions and of new streamers (fold-in against the others' factors),
  popularity and the popular list, the catalog's newcomers, the history terms and ranked lists of
  the viewers whose inputs changed; everything else is kept, so an update's cost grows with the
  new sessions, not with the log. With `incremental=False` ALS is refreshed from the model's own
  factors by sweeps over everyone and every list is ranked again (1.1.0's update);
- the learned ranker weights kept. Only a full retrain learns them again, on the newest
  validation period.

Popularity by viewers (the default) is recomputed from each pair's last session; a model whose
popularity is by sessions or watch time needs the raw window and is refused.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import DECAY_SCALE, RECENT_SESSIONS, STRENGTHS, IdMap, aggregate, row_pointers
from streamrec.data.sessions import END, STREAMER, UID, DataError, Sessions
from streamrec.model.ranking import ALS, GAP, HISTORY, POP, RankerName, entry_history_features, ranked_lists
from streamrec.model.recommender import LIST_LENGTH, Recommender, popularity_feature
from streamrec.model.scoring import build_lists, entry_scores
from streamrec.progress import Timer
from streamrec.train.pipeline import TrainParams, catalog_of, fit_als, warm_start

log = logging.getLogger("updating")

# ALS sweeps of an update, from the model's factors: a second one gained nothing and cost a
# second at 100k viewers (bench/update_bench.py).
UPDATE_SWEEPS = 1


def update(
    previous: Recommender,
    sessions: Sessions,
    sweeps: int = UPDATE_SWEEPS,
    timer: Timer | None = None,
    incremental: bool = True,
) -> tuple[Recommender, int]:
    """The model `previous` with `sessions` merged in (module docstring), its ranked lists built;
    and how many sessions were left out as already counted. `incremental` (the default): only
    what the new sessions touch is recomputed (`_incremental`); else ALS sweeps over every viewer
    and streamer and every list is ranked again. Raises DataError when the model cannot be
    updated."""
    timer = timer or Timer()
    params = _params(previous)
    if previous.recent is None or previous.decayed is None:
        raise DataError(
            "this model file has no momentum counts to update (written before updates existed, or by "
            "--engine spark before 1.2.0); train it once with: python als_fit.py"
        )
    if params.popularity_by != "viewers":
        raise DataError(
            f"this model ranks popularity by {params.popularity_by}, which needs the whole recent window: "
            "an update can recompute popularity by viewers only; retrain in full instead"
        )
    expected = previous.metadata.get("time_format")
    if expected and sessions.time_format != expected:
        raise DataError(
            f"{sessions.path}: expected {expected} times, as the model's log has; found {sessions.time_format} times"
        )
    frame = sessions.frame
    with timer("merge"):
        users = _extended(previous.users, frame[UID])
        streamers = _extended(previous.streamers, frame[STREAMER])
        fresh = _not_yet_counted(previous, frame, users, streamers)
        skipped = int(len(frame) - np.count_nonzero(fresh))
        frame = frame[fresh]
        time_min = previous.time_max - previous.time_span
        time_max = max(previous.time_max, int(frame[END].max()) if len(frame) else previous.time_max)
        new = aggregate(frame, sessions.time_format, users, streamers, log_span=(time_min, time_max))
        merged = _merge(previous, new, time_max, time_min)
    if incremental:
        model = _incremental(previous, merged, new, users, streamers, (time_min, time_max), params, sweeps, timer)
        return model, skipped
    with timer("als"):
        user_items = merged["count"].copy()
        user_items.data = np.asarray(
            STRENGTHS[previous.strength](merged["count"].data.astype(np.float64), merged["watch_time"].data),
            dtype=np.float32,
        )
        init = warm_start(previous, users, streamers, params)
        als = fit_als(user_items, params, init=init, iterations=sweeps, desc="update")
    with timer("popularity"):
        popularity, ranking = _popularity(merged["last_seen"], time_min, time_max, params.popularity_window)
        catalog = catalog_of(np.bincount(merged["count"].indices, minlength=len(streamers)), params)
    model = Recommender(
        als=als,
        users=users,
        streamers=streamers,
        **merged,  # count, watch_time, last_seen, recent, decayed
        popularity=popularity,
        popular_ranking=ranking,
        catalog=catalog,
        time_max=time_max,
        time_span=max(time_max - time_min, 1),
        rankers=dict(previous.rankers),
        strength=previous.strength,
    )
    with timer("lists"):
        build_lists(model)
    return model, skipped


def _strength(previous: Recommender, count: sp.csr_matrix, watch: sp.csr_matrix) -> sp.csr_matrix:
    out = count.copy()
    out.data = np.asarray(STRENGTHS[previous.strength](count.data.astype(np.float64), watch.data), dtype=np.float32)
    return out


def _incremental(
    previous: Recommender,
    merged: dict[str, sp.csr_matrix],
    new,
    users: IdMap,
    streamers: IdMap,
    span: tuple[int, int],
    params: TrainParams,
    sweeps: int,
    timer: Timer,
) -> Recommender:
    """The update's cost grows with the new sessions, not the log: only what they touch is
    recomputed, the rest of `previous` kept as it is.

    - ALS: the factors of every known streamer are kept; new streamers' are solved against the
      factors of the viewers who watched them, then the factors of every viewer with new sessions
      against the streamers' (implicit's recalculate_item / recalculate_user: exact least squares,
      each a fold-in); `sweeps` rounds of both.
    - The ranker's popularity feature is kept for known streamers (new ones get theirs); the
      popularity itself, the popular list, is recomputed. The catalog keeps every streamer it had
      and takes in those that now qualify.
    - History terms are recomputed for the viewers with new sessions; the others keep theirs.
    - Ranked lists: those of the viewers with new sessions, and of any viewer for whom a streamer
      new to the catalog would enter a list or set a new best ALS score, are ranked again; the
      others are kept.

    So for a viewer whose lists are kept, every input of their ranking (their factors and history
    terms, the factors and popularity feature of every candidate, their best ALS score) is what it
    was when the lists were ranked: the stored lists and ranking on request (filters, k beyond the
    list, live sets) still agree, as after a full retrain. A full retrain refreshes everything."""
    from implicit.cpu.als import AlternatingLeastSquares

    n_users, n_streamers = len(users), len(streamers)
    old_users, old_streamers = previous.n_users, previous.n_streamers
    time_min, time_max = span
    changed = np.flatnonzero(np.diff(new.count.indptr) > 0)  # viewers with new sessions (every new one)
    with timer("als"):
        user_items = _strength(previous, merged["count"], merged["watch_time"])
        user_factors, item_factors = warm_start(previous, users, streamers, params)
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=params.factors,
                regularization=params.regularization,
                alpha=params.alpha,
                iterations=sweeps,
                random_state=params.random_state,
            )
        als.user_factors, als.item_factors = user_factors, item_factors
        fresh_streamers = np.arange(old_streamers, n_streamers)
        # New streamers are watched only in the new sessions: their columns are the new aggregates'.
        item_users = (
            _strength(previous, new.count, new.watch_time).T.tocsr()[fresh_streamers] if len(fresh_streamers) else None
        )
        with threadpool_limits(1, "blas"):
            for _ in range(sweeps):
                if item_users is not None:
                    als._XtX = None  # implicit caches the Gram matrix of the other side
                    item_factors[fresh_streamers] = als.recalculate_item(fresh_streamers, item_users)
                als._YtY = None
                if len(changed):
                    user_factors[changed] = als.recalculate_user(changed, user_items[changed])
    with timer("popularity"):
        popularity, ranking = _popularity(merged["last_seen"], time_min, time_max, params.popularity_window)
        wanted = catalog_of(np.bincount(merged["count"].indices, minlength=n_streamers), params)
        catalog = np.union1d(previous.catalog, wanted)
        newcomers = np.setdiff1d(catalog, previous.catalog)
        pop_feature = np.empty(n_streamers, dtype=np.float32)
        pop_feature[:old_streamers] = previous.pop_feature
        pop_feature[old_streamers:] = popularity_feature(popularity)[old_streamers:]
    model = Recommender(
        als=als,
        users=users,
        streamers=streamers,
        **merged,  # count, watch_time, last_seen, recent, decayed
        popularity=popularity,
        popular_ranking=ranking,
        catalog=catalog,
        time_max=time_max,
        time_span=max(time_max - time_min, 1),
        rankers=dict(previous.rankers),
        strength=previous.strength,
        frozen_pop_feature=pop_feature,
    )
    with timer("history"):
        touched = np.zeros(n_users, dtype=bool)
        touched[changed] = True
        kept, fresh = _entry_map(previous, model, touched)
        entry_rows = model.entry_rows()
        for name, ranker in (("history_bonus", RankerName.ALL), ("live_bonus", model.live_ranker)):
            terms = np.empty(model.count.nnz, dtype=np.float32)
            terms[kept[1]] = getattr(previous, name)[kept[0]]
            _, w = model.linear[ranker]
            terms[fresh] = entry_history_features(model, fresh, entry_rows[fresh]) @ w[HISTORY]
            model.__dict__[name] = terms
    with timer("lists"):
        best = np.zeros(n_users, dtype=np.float32)
        assert previous.best_als is not None, "a model file has its lists"
        best[:old_users] = previous.best_als
        again = touched | _newcomers_enter(previous, model, newcomers, best, touched)
        rows = np.flatnonzero(again)
        ranked, best_ranked = ranked_lists(model, model.rankers, LIST_LENGTH, rows=rows, bonus=model.history_bonus)
        best[rows] = best_ranked[rows]
        model.best_als = best
        keep_rows = np.flatnonzero(~again[:old_users])
        for name, (ids, scores) in ranked.items():
            old_ids, old_scores = previous.lists[name]
            width = min(ids.shape[1], old_ids.shape[1])
            ids[keep_rows, :width] = old_ids[keep_rows, :width]
            scores[keep_rows, :width] = old_scores[keep_rows, :width]
        model.lists = ranked
        # Each history entry's served score: those of the viewers ranked again recomputed.
        redo = again[entry_rows]
        kept_again = ~again[previous.entry_rows()]
        for name in {RankerName.ALL, model.live_ranker}:
            stored = previous.own_scores.get(name)
            if stored is None:
                model.own_scores[name] = entry_scores(model, name)
                continue
            out = np.empty(model.count.nnz, dtype=np.float32)
            source = kept[0][kept_again[kept[0]]]
            out[_moved(previous, model, source)] = stored[source]
            out[redo] = entry_scores(model, name, np.flatnonzero(redo))
            model.own_scores[name] = out
    log.info(
        "incremental update: %d viewers with new sessions, %d ranked again, %d new streamers, %d new in the catalog",
        len(changed),
        len(rows),
        len(fresh_streamers),
        len(newcomers),
    )
    return model


def _moved(previous: Recommender, model: Recommender, entries: np.ndarray) -> np.ndarray:
    """Where `previous`'s history entries of viewers whose history did not change sit in `model`."""
    rows = previous.entry_rows()[entries]
    return model.count.indptr[rows] + (entries - previous.count.indptr[rows])


def _entry_map(
    previous: Recommender, model: Recommender, touched: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((previous entries, the same entries in `model`) of the viewers not `touched`, the entries
    of `model` of the touched viewers)."""
    rows = previous.entry_rows()
    kept = np.flatnonzero(~touched[rows])
    fresh = np.flatnonzero(touched[model.entry_rows()])
    return (kept, _moved(previous, model, kept)), fresh


def _newcomers_enter(
    previous: Recommender, model: Recommender, newcomers: np.ndarray, best: np.ndarray, touched: np.ndarray
) -> np.ndarray:
    """Per viewer: whether a streamer new to the catalog changes their lists (it would enter one,
    it is a better ALS match than their best, or they watched it). Viewers already `touched` are
    ranked again anyway."""
    out = np.zeros(model.n_users, dtype=bool)
    if not len(newcomers):
        return out
    watched = np.isin(model.count.indices, newcomers)
    out[model.entry_rows()[watched]] = True
    rest = np.flatnonzero(~touched[: previous.n_users] & ~out[: previous.n_users])
    factors = np.ascontiguousarray(model.als.item_factors[newcomers])
    pop = model.pop_feature[newcomers]
    for lo in range(0, len(rest), 1 << 14):
        chunk = rest[lo : lo + (1 << 14)]
        als = model.als.user_factors[chunk] @ factors.T
        hit = als.max(axis=1) > best[chunk]
        for name, (_, scores) in previous.lists.items():
            c, w = model.linear[name]
            score = als * float(w[ALS] - w[GAP]) + (c + w[GAP] * best[chunk])[:, None] + (w[POP] * pop)[None, :]
            hit |= (score > scores[chunk, -1][:, None]).any(axis=1)
        out[chunk[hit]] = True
    return out


def update_metadata(
    previous: Recommender, model: Recommender, sessions: Sessions, source: str, sha256: str | None
) -> dict:
    """The previous model's metadata with this update's facts, and the chain: the model it was
    updated from and every file merged in since the last full retrain."""
    old = previous.metadata
    chain = old.get("updated", {})
    files = [*chain.get("files", []), {"source": source, "sha256": sha256, "rows_used": sessions.rows_used}]
    return {
        **old,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": model.n_users,
        "streamers": model.n_streamers,
        "interactions": int(model.count.nnz),
        "updated": {
            "previous_created_at": old.get("created_at"),
            "retrained_at": chain.get("retrained_at", old.get("created_at")),
            "files": files,
        },
    }


def _params(previous: Recommender) -> TrainParams:
    known = {f for f in TrainParams.__dataclass_fields__}
    given = {k: v for k, v in previous.metadata.get("params", {}).items() if k in known}
    return replace(TrainParams(), **given)


def _extended(ids: IdMap, column: pd.Series) -> IdMap:
    """`ids` with the ids of `column` it does not know appended, in order of first appearance."""
    unseen = column[ids.rows(column) < 0]
    if not len(unseen):
        return ids
    return IdMap.from_ids(np.concatenate([ids.ids, pd.unique(unseen.astype(str))]))


def _not_yet_counted(previous: Recommender, frame: pd.DataFrame, users: IdMap, streamers: IdMap) -> np.ndarray:
    """Per session: True unless the model already counted it, i.e. its pair is in the model and
    was last seen at or after the session's end."""
    u, s = users.rows(frame[UID]), streamers.rows(frame[STREAMER])
    old = (u < previous.n_users) & (s < previous.n_streamers)
    keys = u[old].astype(np.int64) * previous.n_streamers + s[old]
    model_keys = previous.history_keys
    pos = np.minimum(np.searchsorted(model_keys, keys), len(model_keys) - 1)
    found = model_keys[pos] == keys
    counted = np.zeros(len(frame), dtype=bool)
    counted[np.flatnonzero(old)[found]] = frame[END].to_numpy()[old][found] <= previous.last_seen.data[pos[found]]
    return ~counted


def _merge(previous: Recommender, new, time_max: int, time_min: int) -> dict[str, sp.csr_matrix]:
    """The previous history and the new sessions' aggregates (`new`, on the extended ids) as one
    history: one CSR pattern for every per-pair array."""
    shape = new.count.shape
    n_s = shape[1]

    def keys(m: sp.csr_matrix) -> np.ndarray:
        return np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * n_s + m.indices

    old_keys, new_keys = keys(previous.count), keys(new.count)
    # The decayed counts decay further by the time that passed since the previous model's end.
    shift = np.exp(-(time_max - previous.time_max) / (DECAY_SCALE * max(time_max - time_min, 1)))
    # Of a viewer's last RECENT_SESSIONS sessions, those that are new push as many old ones out.
    new_sessions = np.asarray(new.count.sum(axis=1)).ravel()
    keep = np.clip(RECENT_SESSIONS - new_sessions[: previous.n_users], 0, None)
    keep = keep / np.maximum(np.minimum(previous.user_totals, RECENT_SESSIONS), 1e-9)
    old_rows = previous.entry_rows()
    assert previous.recent is not None and previous.decayed is not None, "checked by the caller: momentum counts"
    columns = {
        "count": (previous.count.data, new.count.data, np.add),
        "watch_time": (previous.watch_time.data, new.watch_time.data, np.add),
        "last_seen": (previous.last_seen.data, new.last_seen.data, np.maximum),
        "recent": (previous.recent.data * np.minimum(keep[old_rows], 1.0), new.recent.data, np.add),
        "decayed": (previous.decayed.data * shift, new.decayed.data, np.add),
    }
    every = np.concatenate([old_keys, new_keys])
    order = np.argsort(every, kind="stable")
    every = every[order]
    starts = np.flatnonzero(np.concatenate([[True], every[1:] != every[:-1]])) if len(every) else np.empty(0, int)
    uniq = every[starts]
    rows, cols = uniq // n_s, (uniq % n_s).astype(np.int32)
    indptr = row_pointers(rows, shape[0])
    out = {}
    for name, (old, fresh, combine) in columns.items():
        dtype = np.float64 if name == "last_seen" else np.float32
        values = np.concatenate([np.asarray(old, dtype=np.float64), np.asarray(fresh, dtype=np.float64)])[order]
        out[name] = sp.csr_matrix((combine.reduceat(values, starts).astype(dtype), cols, indptr), shape=shape)
    return out


def _popularity(last_seen: sp.csr_matrix, time_min: int, time_max: int, window: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct viewers per streamer whose last session with it ended in the recent `window`
    share of the span, and the streamer rows by that, most first (ties by row)."""
    cut = time_max - window * (time_max - time_min)
    recent = last_seen.data >= cut
    popularity = np.bincount(last_seen.indices[recent], minlength=last_seen.shape[1]).astype(np.float32)
    return popularity, np.argsort(-popularity, kind="stable")

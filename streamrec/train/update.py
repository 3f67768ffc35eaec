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
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import DECAY_SCALE, RECENT_SESSIONS, STRENGTHS, IdMap, aggregate, row_pointers
from streamrec.data.sessions import END, STREAMER, UID, DataError, Sessions
from streamrec.model.ranking import (
    ALS,
    GAP,
    HISTORY,
    POP,
    RankerName,
    entry_history_features,
    merge_stored,
    pair_features,
    ranked_lists,
    row_entries,
)
from streamrec.model.recommender import LIST_LENGTH, Recommender, popularity_feature
from streamrec.model.scoring import build_lists, entry_scores
from streamrec.progress import Timer
from streamrec.train.pipeline import TrainParams, catalog_of, fit_als, new_als, warm_start

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
      factors of the viewers who watched them (implicit's recalculate_item). A viewer whose ALS
      input changed (a streamer new to them; with a strength other than binary, any session) is
      solved against the streamers' factors: from their own factors by implicit's
      conjugate-gradient step (what a sweep of its fit does), a new viewer exactly
      (recalculate_user); `sweeps` rounds of both. A viewer who only watched streamers they had
      watched keeps the factors: with binary strength their ALS input is the same.
    - The ranker's popularity feature is kept for known streamers (new ones get theirs); the
      popularity itself, the popular list, is recomputed. The catalog keeps every streamer it had
      and takes in those that now qualify.
    - History terms are recomputed for the viewers with new sessions; the others keep theirs.
    - Ranked lists: ranked again for the viewers whose factors changed. For those with repeat
      sessions only, only their own streamers' scores changed: the default list is merged from
      its never-watched part and their streamers rescored (ranked again when the stored part is
      too short to be exact), the discovery list is the same. Any viewer for whom a streamer new
      to the catalog would enter a list or set a new best ALS score is ranked again. The others
      keep their lists.

    So for a viewer whose lists are kept, every input of their ranking (their factors and history
    terms, the factors and popularity feature of every candidate, their best ALS score) is what it
    was when the lists were ranked: the stored lists and ranking on request (filters, k beyond the
    list, live sets) still agree, as after a full retrain (tested). A full retrain refreshes all."""
    n_users, n_streamers = len(users), len(streamers)
    old_users, old_streamers = previous.n_users, previous.n_streamers
    time_min, time_max = span
    changed = np.flatnonzero(np.diff(new.count.indptr) > 0)  # viewers with new sessions (every new one)
    # Whose ALS input changed: new viewers, viewers with a pair new to them (all, unless binary).
    new_rows = np.repeat(np.arange(n_users), np.diff(new.count.indptr))
    keys = new_rows.astype(np.int64) * old_streamers + new.count.indices
    old_pair = (new_rows < old_users) & (new.count.indices < old_streamers)
    pos = np.minimum(np.searchsorted(previous.history_keys, keys[old_pair]), len(previous.history_keys) - 1)
    known_pair = np.zeros(len(keys), dtype=bool)
    known_pair[old_pair] = previous.history_keys[pos] == keys[old_pair]
    refit_mask = np.zeros(n_users, dtype=bool)
    refit_mask[new_rows[~known_pair]] = True
    refit_mask[old_users:] = True
    if previous.strength != "binary":
        refit_mask[changed] = True
    refit = np.flatnonzero(refit_mask)
    with timer("als"):
        user_items = _strength(previous, merged["count"], merged["watch_time"])
        rng = np.random.default_rng(params.random_state)
        user_factors = _carried(previous.als.user_factors, n_users, rng)
        item_factors = _carried(previous.als.item_factors, n_streamers, rng)
        with threadpool_limits(1, "blas"):
            als = new_als(params, sweeps)
        als.user_factors, als.item_factors = user_factors, item_factors
        fresh_streamers = np.arange(old_streamers, n_streamers)
        # New streamers are watched only in the new sessions: their columns are the new aggregates'.
        item_users = None
        if len(fresh_streamers):
            item_users = _strength(previous, new.count, new.watch_time).T.tocsr()[fresh_streamers]
        known, fresh_users = refit[refit < old_users], refit[refit >= old_users]
        with threadpool_limits(1, "blas"):
            for _ in range(sweeps):
                if item_users is not None:
                    als._XtX = None  # implicit caches the Gram matrix of the other side
                    item_factors[fresh_streamers] = als.recalculate_item(fresh_streamers, item_users)
                als._YtY = None
                if len(known):
                    block = user_factors[known]
                    rows = user_items[known]
                    if als.alpha != 1.0:
                        rows = als.alpha * rows
                    als.solver(rows, block, item_factors, als.regularization, num_threads=als.num_threads)
                    user_factors[known] = block
                if len(fresh_users):
                    user_factors[fresh_users] = als.recalculate_user(fresh_users, user_items[fresh_users])
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
    assert previous.best_als is not None, "a model file has its lists"
    repeat = np.zeros(n_users, dtype=bool)
    repeat[changed] = True
    touched = repeat.copy()
    repeat &= ~refit_mask  # repeat sessions only: the pairs, the factors and the best are the same
    with timer("history"):
        kept, fresh = _entry_map(previous, model, touched)
        entry_rows = model.entry_rows()
        features = entry_history_features(model, fresh, entry_rows[fresh])
        moved = _repeat_entries(previous, model, repeat)
        shift: dict[str, np.ndarray] = {}  # per ranker: how the repeat viewers' history terms moved
        for which, ranker in (("history_bonus", RankerName.ALL), ("live_bonus", model.live_ranker)):
            terms = np.empty(model.count.nnz, dtype=np.float32)
            before = getattr(previous, which)
            terms[kept[1]] = before[kept[0]]
            terms[fresh] = features @ model.linear[ranker][1][HISTORY]
            model.__dict__[which] = terms
            shift[ranker] = terms[moved[1]] - before[moved[0]]
        del features
    with timer("lists"):
        # Each history entry's served score: kept for the viewers whose history is the same, moved
        # by what the history terms moved for the repeat viewers (nothing else of theirs changed),
        # recomputed below for the viewers ranked again.
        own: dict[str, np.ndarray | None] = {}
        for name in {RankerName.ALL, model.live_ranker}:
            stored = previous.own_scores.get(name)
            if stored is None:
                own[name] = None
                continue
            out = np.empty(model.count.nnz, dtype=np.float32)
            out[kept[1]] = stored[kept[0]]
            out[moved[1]] = stored[moved[0]] + shift[name]
            own[name] = out
        best = np.zeros(n_users, dtype=np.float32)
        best[:old_users] = previous.best_als
        model.best_als = best
        lists = {
            name: (np.array(ids[:old_users]), np.array(scores[:old_users]))
            for name, (ids, scores) in previous.lists.items()
        }
        redo = refit_mask.copy()
        redo[:old_users] |= _merge_own(model, lists, np.flatnonzero(repeat), own[RankerName.ALL])
        redo |= _newcomers_enter(model, lists, newcomers, best, redo)
        rows = np.flatnonzero(redo)
        watched = own[RankerName.ALL]  # the ranking writes the `all` scores of the viewers ranked again
        ranked, best_ranked = ranked_lists(
            model, model.rankers, LIST_LENGTH, rows=rows, bonus=model.history_bonus, watched_out=watched
        )
        best[rows] = best_ranked[rows]
        keep_rows = np.flatnonzero(~redo[:old_users])
        for listed, (ids, scores) in ranked.items():
            width = min(ids.shape[1], lists[listed][0].shape[1])
            ids[keep_rows, :width] = lists[listed][0][keep_rows, :width]
            scores[keep_rows, :width] = lists[listed][1][keep_rows, :width]
        model.lists = ranked
        again = np.flatnonzero(redo[entry_rows])
        for scored, served in own.items():
            if served is None:
                model.own_scores[scored] = entry_scores(model, scored)
            else:
                if scored != RankerName.ALL:
                    served[again] = entry_scores(model, scored, again)
                model.own_scores[scored] = served
    log.info(
        "incremental update: %d viewers with new sessions (%d with new streamers or new), %d ranked again, "
        "%d new streamers, %d new in the catalog",
        len(changed),
        len(refit),
        len(rows),
        len(fresh_streamers),
        len(newcomers),
    )
    return model


def _carried(factors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`factors` for the first rows (known ids keep their rows), implicit's small random start for
    the rows appended."""
    out = np.empty((n, factors.shape[1]), dtype=factors.dtype)
    out[: len(factors)] = factors
    out[len(factors) :] = rng.random((n - len(factors), factors.shape[1]), dtype=np.float32) * 0.01
    return out


def _repeat_entries(previous: Recommender, model: Recommender, repeat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous entries, the same entries in `model`) of the viewers with repeat sessions only
    (their pairs are the same)."""
    entries = np.flatnonzero(repeat[: previous.n_users][previous.entry_rows()])
    return entries, _moved(previous, model, entries)


def _merge_own(model: Recommender, lists: dict, rows: np.ndarray, own: np.ndarray | None) -> np.ndarray:
    """For viewers with repeat sessions only: their default list merged in `lists` from its
    never-watched part (unchanged: their factors, best and the candidates are) and their own
    streamers rescored (`own`: every entry's served score, when known), as a request with held
    sessions merges it (ranking.merge_stored). Per viewer: True where that is not exact, and the
    viewer must be ranked again."""
    ids_all, scores_all = lists[RankerName.ALL.value]
    width = ids_all.shape[1]
    assert model.best_als is not None, "the previous best scores are in place"
    redo = np.zeros(ids_all.shape[0], dtype=bool)
    c, w = model.linear[RankerName.ALL]
    shift = model.rankers[RankerName.ALL].watched_shift
    watched_w = w if shift is None else w + shift
    best = model.best_als

    def merge(chunk: np.ndarray) -> None:
        local, entries = row_entries(model.count.indptr, chunk)
        if not len(local):
            return
        users, items = chunk[local], model.count.indices[entries].astype(np.int64)
        if own is not None:
            mine = own[entries]
        else:
            rest = pair_features(model, users, items, best[users], history=False) @ watched_w
            mine = (c + rest + model.history_bonus[entries]).astype(np.float32)
        ids, scores, exact = merge_stored(ids_all[chunk], scores_all[chunk], local, items, mine, width)
        redo[chunk[~exact]] = True
        ids_all[chunk[exact]] = ids[exact]
        scores_all[chunk[exact]] = scores[exact]

    with threadpool_limits(1, "blas"), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(merge, (rows[lo : lo + 4096] for lo in range(0, len(rows), 4096))))
    return redo


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
    model: Recommender, lists: dict, newcomers: np.ndarray, best: np.ndarray, redo: np.ndarray
) -> np.ndarray:
    """Per viewer: whether a streamer new to the catalog changes their lists (it would enter one
    of `lists`, it is a better ALS match than their best, or they watched it). Viewers already in
    `redo` are ranked again anyway."""
    out = np.zeros(model.n_users, dtype=bool)
    if not len(newcomers):
        return out
    watched = np.isin(model.count.indices, newcomers)
    out[model.entry_rows()[watched]] = True
    n_old = next(iter(lists.values()))[0].shape[0]
    rest = np.flatnonzero(~redo[:n_old] & ~out[:n_old])
    factors = np.ascontiguousarray(model.als.item_factors[newcomers])
    pop = model.pop_feature[newcomers]
    for lo in range(0, len(rest), 1 << 14):
        chunk = rest[lo : lo + (1 << 14)]
        als = model.als.user_factors[chunk] @ factors.T
        hit = als.max(axis=1) > best[chunk]
        for name, (_, scores) in lists.items():
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

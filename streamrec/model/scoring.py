"""How a trained model ranks: one verb for a viewer the model knows, one for a viewer known only by
recent streamers, similar streamers, and the ranked lists every viewer gets at training time.

    from streamrec.model.scoring import rank, recommend_for
    rows, scores = rank(model, row, k=10, exclude_watched=True)           # the stored list's slice
    rows, scores = rank(model, row, k=10, among=live.candidates, live=True, lists=live.lists)
    recommend_for(model, "42", k=10)                                       # ("personal", [(name, score), ...])

`rank` says what is allowed by its parameters (`among` the streamers that may be listed, `passes`
a filter over them, `live` for the live set's ranker) and what is left out (`exclude_watched`); the
fast paths (a slice of a stored list, a filter wide enough that a stored list holds k that pass)
are inside it. Scores are the served ranker's (`RankerName`): ALL for the default list, NEW with
exclude_watched, the live one (LIVE when the model learned one, else ALL) for live-only lists.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp

from streamrec.data.interactions import DECAY_SCALE, RECENT_SESSIONS, STRENGTHS, extra_length
from streamrec.data.sessions import INTEGER
from streamrec.model.popular import most_popular, top_up
from streamrec.model.ranking import (
    ALS,
    GAP,
    HISTORY,
    POP,
    RankerName,
    history_features,
    merge_stored,
    ranked_lists,
    top_n,
)
from streamrec.model.recommender import LIST_LENGTH, LIVE_LIST_LENGTH, Candidates, Recommender
from streamrec.progress import progress

PERSONAL, POPULAR, RECENT = "personal", "popular", "recent"
# The rankers' names as plain strings, for lookups on the request path: a StrEnum member as a dict
# key costs three times a str.
_ALL, _NEW = RankerName.ALL.value, RankerName.NEW.value


class RowMask(Protocol):
    """A bool per streamer row, read by rows: a numpy mask, or a filter's code tables."""

    def __getitem__(self, rows: np.ndarray, /) -> np.ndarray: ...


def ranker_for(model: Recommender, exclude_watched: bool, live: bool) -> RankerName:
    """The ranker behind a list: NEW with exclude_watched, else the live ranker for live lists, else ALL."""
    if exclude_watched:
        return RankerName.NEW
    return model.live_ranker if live else RankerName.ALL


def rank(
    model: Recommender,
    row: int,
    k: int = 10,
    exclude_watched: bool = False,
    *,
    among: Candidates | None = None,
    passes: np.ndarray | RowMask | None = None,
    share: float = 1.0,
    live: bool = False,
    lists: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    folded: Folded | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k streamer rows and served scores for the viewer the model knows as `row`.

    - `among`: the streamers that may be listed, gathered (`model.candidates(rows)`). None: the
      catalog, with the viewer's own streamers outside it, and popular streamers scored below the
      list when fewer than k are ranked (a small catalog): exactly k.
    - `passes`: a bool per streamer row, a filter; `among` then holds the streamers of the catalog
      (of the live set, with `live`) that pass, and `share` is the share of them that pass (whether
      a stored list is likely to hold k of them).
    - `live`: `among` are the streamers live now, ordered by the live ranker; the viewer's own
      streamers that are not live are not listed.
    - `lists`: the lists ranked in advance for these candidates (default: the model's, for the
      catalog); a slice of them answers when it can.
    - `exclude_watched`: the viewer's own streamers are left out (the NEW ranker orders the rest).
    - `folded`: the viewer's history with sessions the model has not taken in (`fold_sessions`):
      ranked on request with it, never read from stored lists.

    Gives min(k, streamers ranked), except as said for `among=None`."""
    catalog = among is None and passes is None and not live
    if catalog:
        lists = model.lists if lists is None else lists
    else:
        assert among is not None, "a filter or the live set applies to candidates: give them (among)"
    stored = _from_lists(lists, row, k, exclude_watched, passes, share, live) if lists and folded is None else None
    if stored is not None:
        rows, scores = stored
    else:
        cands = model.catalog_candidates if among is None else among
        rows, scores = _rank_among(model, row, cands, k, exclude_watched, passes, live, not live, folded)
    if catalog and len(rows) < k:
        watched = model.history(row)[0] if folded is None else folded.rows
        skip = np.concatenate([rows, watched]) if exclude_watched else rows
        rows, scores = top_up(rows, scores, k, model.popular_ranking, model.popularity, skip)
    return rows, scores


def _from_lists(
    lists: dict[str, tuple[np.ndarray, np.ndarray]],
    row: int,
    k: int,
    exclude_watched: bool,
    passes: np.ndarray | RowMask | None,
    share: float,
    live: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The answer read from stored lists, or None when they cannot give it.
    Unfiltered: the first k, when the list holds them or is shorter than its width (then it holds
    every candidate there is); a live list for any k up to LIVE_LIST_LENGTH. Filtered: the first
    k that pass, tried when k of the list's width are expected to pass (a wide filter such as a big
    language is then a slice; a narrower one is ranked on request among the streamers that pass)."""
    ids, scores = lists[_NEW if exclude_watched else _ALL]
    if passes is None:
        if live and k > LIVE_LIST_LENGTH:
            return None
        top = ids[row, :k]
        n = int(np.count_nonzero(top >= 0))
        return (top[:n], scores[row, :n]) if live or n == k or n < ids.shape[1] else None
    if share * lists[_ALL][0].shape[1] < k:
        return None
    top = ids[row]
    ok = top >= 0
    ok[ok] = passes[top[ok]]
    if np.count_nonzero(ok) < k:
        return None
    picked = np.flatnonzero(ok)[:k]
    return top[picked], scores[row, picked]


def _rank_among(
    model: Recommender,
    row: int,
    among: Candidates,
    k: int,
    exclude_watched: bool,
    passes: np.ndarray | RowMask | None,
    live: bool,
    outside: bool,
    folded: Folded | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked on request: one dot product per candidate, the history terms precomputed (or
    `folded`'s). The viewer's own streamers are left out with exclude_watched; else ranked as
    watched: those among the candidates, and with `outside` those outside them too, of those
    that pass."""
    name = ranker_for(model, exclude_watched, live)
    best = float(model.best_als[row]) if model.best_als is not None else 0.0
    vector = model.als.user_factors[row]
    rows = among.rows
    scores = scores_as_new(model, name, among.factors @ vector, best, among.pop[name])
    if folded is None:
        watched, entries = model.history(row)
        terms = (model.live_bonus if live else model.history_bonus)[entries]
    else:  # scored from its own terms (the model's stored own scores are of the history without them)
        watched, entries, terms = folded.rows, None, folded.live_bonus if live else folded.bonus
    own = np.arange(len(watched)) if passes is None else np.flatnonzero(passes[watched])
    mine = watched[own]
    if len(mine):
        if passes is not None and not live:
            # A filter over the catalog: its candidates are the catalog's streamers that pass, so
            # which of the viewer's (passing) streamers are candidates is one lookup.
            hit = model.in_catalog[mine]
            scores[np.searchsorted(rows, mine[hit])] = -np.inf  # left out, or ranked below as watched
        else:
            pos = np.searchsorted(rows, mine)
            hit = pos < len(rows)
            hit[hit] = rows[pos[hit]] == mine[hit]
            scores[pos[hit]] = -np.inf
        if not exclude_watched:
            if not outside:
                own, mine = own[hit], mine[hit]
            stored = None if entries is None else own + entries.start
            rows, scores = _with_own(model, name, vector, best, rows, scores, mine, terms[own], stored)
    top = top_n(scores, k)
    top = top[np.isfinite(scores[top])]
    return rows[top], scores[top]


class Folded(NamedTuple):
    """A viewer's history with sessions the model has not taken in folded in: their streamers
    (sorted rows) and the history terms for them of the default ranker and of the live one (the
    same array when that is the default ranker). A tuple of arrays only: held in a worker's
    cache, the garbage collector stops tracking it."""

    rows: np.ndarray
    bonus: np.ndarray
    live_bonus: np.ndarray


def fold_sessions(model: Recommender, row: int, sessions: list[tuple[str, int, int]], newest: int) -> Folded | None:
    """The history of the viewer the model knows as `row` with `sessions` ((streamer_name, start,
    end), not yet in the model) added as an update adds them (train/update.py): sessions and
    watch time added, last seen the later, the momentum counts carried forward, every feature
    taken at `newest` (the latest time known, if after the model's end). A session whose pair
    was last seen at or after its end is in the model already and is left out. None when no
    session is left (the viewer is served as the model serves them).

    On the request path of a viewer's first request after their sessions change: the new
    sessions (at most EVENTS_PER_VIEWER) are summed per streamer in Python, the viewer's whole
    history in a few array operations over one (5, streamers) block."""
    lookup = model.streamer_row
    picked = [(r, start, end) for name, start, end in sessions if (r := lookup(name)) >= 0 and end >= start]
    if not picked:
        return None
    watched, entries = model.history(row)
    n_old = len(watched)
    last_seen = model.last_seen.data[entries]
    column: dict[int, int] = {}  # streamer row -> its history entry, for the streamers already watched
    if n_old:
        wanted = [r for r, _, _ in picked]
        at = np.minimum(np.searchsorted(watched, wanted), n_old - 1)
        seen = watched[at] == wanted
        had = np.where(seen, last_seen[at], -np.inf).tolist()
        column = {r: p for r, p, old in zip(wanted, at.tolist(), seen.tolist(), strict=True) if old}
        picked = [s for s, last in zip(picked, had, strict=True) if s[2] > last]
        if not picked:
            return None

    now = max(model.time_max, max(end for _, _, end in picked), int(newest))
    span = max(now - (model.time_max - model.time_span), 1)
    extra = extra_length(model.metadata.get("time_format", INTEGER))
    scale = DECAY_SCALE * span
    new: dict[int, list[float]] = {}  # streamer row -> [count, watch time, last seen, recent, decayed]
    for r, start, end in picked:
        terms = new.get(r)
        if terms is None:
            terms = new[r] = [0.0, 0.0, -np.inf, 0.0, 0.0]
        terms[0] += 1.0
        terms[1] += float(end - start) + extra
        terms[2] = max(terms[2], float(end))
        terms[4] += math.exp(-(now - end) / scale)
    for i in sorted(range(len(picked)), key=lambda i: picked[i][1])[-RECENT_SESSIONS:]:  # the latest starts
        new[picked[i][0]][3] += 1.0

    brand = sorted(r for r in new if r not in column)  # newly watched: columns after the history's
    column.update((r, n_old + i) for i, r in enumerate(brand))
    where = [column[r] for r in new]
    cols = np.zeros((5, n_old + len(brand)))  # count, watch time, last seen, recent, decayed
    old_count = model.count.data[entries].astype(np.float64)
    cols[0, :n_old] = old_count
    cols[1, :n_old] = model.watch_time.data[entries]
    cols[2, :n_old] = last_seen
    cols[2, n_old:] = -np.inf
    if model.recent is not None and model.decayed is not None:
        keep = max(RECENT_SESSIONS - len(picked), 0) / max(min(float(old_count.sum()), RECENT_SESSIONS), 1e-9)
        cols[3, :n_old] = model.recent.data[entries] * min(keep, 1.0)
        cols[4, :n_old] = model.decayed.data[entries] * np.exp(-(now - model.time_max) / scale)
    added = np.array(list(new.values())).T
    last_added, added[2] = added[2].copy(), 0.0
    cols[:, where] += added
    cols[2, where] = np.maximum(cols[2, where], last_added)
    rows = watched
    if brand:  # the streamers in row order, as a history's are
        rows = np.concatenate([watched, brand])
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[:, order]
    count, watch, last, recent, decayed = cols
    x = history_features(
        count,
        watch,
        np.full(len(count), count.sum()),
        np.full(len(count), watch.sum()),
        (now - last) / span,
        recent,
        decayed,
    )
    bonus = (x @ model.linear[RankerName.ALL][1][HISTORY]).astype(np.float32)
    if model.live_ranker == RankerName.ALL:
        return Folded(rows, bonus, bonus)
    return Folded(rows, bonus, (x @ model.linear[model.live_ranker][1][HISTORY]).astype(np.float32))


def rank_folded_list(
    model: Recommender, row: int, folded: Folded, k: int, exclude_watched: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """The default (or, with exclude_watched, discovery) list of the viewer the model knows as
    `row` with `folded` sessions, from their stored list: their factors and best score are the
    model's, so the never-watched part of the stored list keeps its order and scores; only their
    own streamers are rescored (the default list) or left out (discovery). None when the stored
    list is too short for that to be exact (rank on request then)."""
    ids, scores = model.lists[_NEW if exclude_watched else _ALL]
    ids, scores = ids[row], scores[row]
    if exclude_watched:
        full = ids[-1] >= 0  # a list not full held every candidate there was
        listed = ids >= 0
        pos = np.searchsorted(folded.rows, ids)
        own = listed & (pos < len(folded.rows))
        own[own] = folded.rows[pos[own]] == ids[own]
        never = np.flatnonzero(listed & ~own)
        if full and len(never) < k:
            return None
        return ids[never[:k]].astype(np.int64), scores[never[:k]]
    best = float(model.best_als[row]) if model.best_als is not None else 0.0
    vector = model.als.user_factors[row]
    mine = own_scores(model, _ALL, vector, best, folded.rows, folded.bonus)
    rows = np.zeros(len(folded.rows), dtype=np.int64)
    merged_ids, merged_scores, exact = merge_stored(ids[None], scores[None], rows, folded.rows, mine, k)
    if not exact[0]:
        return None
    listed = merged_ids[0] >= 0
    return merged_ids[0][listed], merged_scores[0][listed]


def rank_recent(
    model: Recommender,
    names: list[str],
    k: int = 10,
    exclude_watched: bool = False,
    among: Candidates | None = None,
    passes: np.ndarray | RowMask | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The served ranking for a viewer the model does not know, from the streamers they watched
    recently (`names`; order is ignored, repeats count). Their ALS vector is solved against the
    trained streamer factors (implicit's recalculate_user); the recent streamers count as sessions
    just watched. Candidates: the catalog plus the recent streamers, or `among` if given; of
    those, only the rows that `passes` (a bool per streamer row) lets through. None if no name
    is known."""
    rows = model.streamers.rows(names)
    items, counts = np.unique(rows[rows >= 0], return_counts=True)
    if len(items) == 0:
        return None
    strength = STRENGTHS[model.strength](counts.astype(np.float64), counts.astype(np.float64))
    user_items = sp.csr_matrix((np.asarray(strength, np.float32), items, [0, len(items)]), shape=(1, model.n_streamers))
    vector = model.als.recalculate_user(0, user_items)
    best = float((model.catalog_factors @ vector).max(initial=0.0))
    if among is None:
        outside = items[~model.in_catalog[items]]
        if len(outside):
            among = model.candidates(np.sort(np.concatenate([model.catalog, outside])))
        else:
            among = model.catalog_candidates
    if passes is not None:
        among = model.candidates(among.rows[passes[among.rows]])
    _, w = model.linear[RankerName.ALL]
    total = np.full(len(items), float(counts.sum()))
    # All just watched: every session is recent and undecayed.
    recent = counts * (min(counts.sum(), RECENT_SESSIONS) / counts.sum())
    bonus = history_features(counts, counts, total, total, np.zeros(len(items)), recent, counts) @ w[HISTORY]
    name = ranker_for(model, exclude_watched, live=False)
    scores = scores_as_new(model, name, among.factors @ vector, best, among.pop[name])
    cand = among.rows
    pos = np.searchsorted(cand, items)
    hit = pos < len(cand)
    hit[hit] = cand[pos[hit]] == items[hit]
    scores[pos[hit]] = -np.inf  # left out, or ranked below as watched
    if not exclude_watched:
        mine = items[hit]
        cand, scores = _with_own(model, name, vector, best, cand, scores, mine, bonus.astype(np.float32)[hit])
    top = top_n(scores, k)
    top = top[np.isfinite(scores[top])]
    return cand[top], scores[top]


def similar(
    model: Recommender, row: int, k: int = 10, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Streamers whose audiences overlap with streamer `row`'s: cosine similarity of ALS
    streamer factors, among the catalog (or `candidates`), never the streamer itself."""
    candidates = model.catalog if candidates is None else candidates
    candidates = candidates[candidates != row]
    factors = model.als.item_factors
    norms = np.linalg.norm(factors[candidates], axis=1) * max(float(np.linalg.norm(factors[row])), 1e-12)
    scores = (factors[candidates] @ factors[row]) / np.maximum(norms, 1e-12)
    top = top_n(scores, k)
    return candidates[top], scores[top]


def recommend_for(
    model: Recommender, user_id: str, k: int = 10, exclude_watched: bool = False
) -> tuple[str, list[tuple[str, float]]]:
    """(source, [(streamer_name, score), ...]) for any user id; unknown users get popular."""
    row = model.users.get(user_id)
    if row is None:
        source, (rows, scores) = POPULAR, most_popular(model.popular_ranking, model.popularity, k)
    else:
        source, (rows, scores) = PERSONAL, rank(model, row, k, exclude_watched)
    names = [model.streamers.name(r) for r in rows.tolist()]
    return source, list(zip(names, scores.astype(float).tolist(), strict=True))


def personal_recommendations(
    model: Recommender, user_id: str, k: int = 10, exclude_watched: bool = False
) -> tuple[str, list[tuple[str, float]]]:
    """(source, [(streamer_name, score), ...]) for one viewer, as `GET /recomendations/user/{id}`
    ranks them: "personal" for a viewer the model knows, "popular" for one it does not. The
    founding description's name for `recommend_for`."""
    return recommend_for(model, str(user_id), k, exclude_watched)


# --- the ranked lists of every viewer, at training time ------------------------------------------


def build_lists(model: Recommender, show_progress: bool = False) -> None:
    """Rank the catalog (and each user's history) for every user with both rankers, and the
    served score of every history entry for the rankers that score watched streamers."""
    for derived in ("history_bonus", "live_bonus", "linear", "catalog_candidates"):  # rankers may have changed
        model.__dict__.pop(derived, None)
    if show_progress:
        with progress("ranked lists", model.n_users, "users") as bar:
            model.lists, model.best_als = ranked_lists(model, model.rankers, LIST_LENGTH, done=bar.update)
    else:
        model.lists, model.best_als = ranked_lists(model, model.rankers, LIST_LENGTH)
    model.own_scores = {name: entry_scores(model, name) for name in {RankerName.ALL, model.live_ranker}}


def entry_scores(model: Recommender, name: str, entries: np.ndarray | None = None) -> np.ndarray:
    """Ranker `name`'s score of every history entry (or of `entries`), as ranking on request
    computes it."""
    assert model.best_als is not None, "rank the lists first"
    bonus = model.history_bonus if name == RankerName.ALL else model.live_bonus
    entry_rows = model.entry_rows()
    every = np.arange(model.count.nnz) if entries is None else entries
    out = np.empty(len(every), dtype=np.float32)
    for lo in range(0, len(every), 1 << 20):  # blocks: the factor rows of every entry are GBs
        block = every[lo : lo + (1 << 20)]
        users, items = entry_rows[block], model.count.indices[block]
        out[lo : lo + len(block)] = own_scores(
            model, name, model.als.user_factors[users], model.best_als[users].astype(np.float64), items, bonus[block]
        )
    return out


# --- the served score -------------------------------------------------------------------------------


def _with_own(
    model: Recommender,
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
    stored = model.own_scores.get(name) if entries is not None else None
    own = stored[entries] if stored is not None else own_scores(model, name, vector, best, mine, bonus)
    return np.concatenate([rows, mine]), np.concatenate([scores, own])


def own_scores(
    model: Recommender, name: str, vectors: np.ndarray, best, items: np.ndarray, bonus: np.ndarray
) -> np.ndarray:
    """Ranker `name`'s scores of watched streamers `items`: for one user (`vectors` its ALS
    vector, `best` its best catalog score) or one per item (a row and a best each)."""
    pop = model.pop_feature[items]
    factors = model.als.item_factors[items]
    als = factors @ vectors if vectors.ndim == 1 else np.einsum("ij,ij->i", factors, vectors)
    own = scores_as_new(model, name, als, best, (model.linear[name][1][POP] * pop).astype(np.float32))
    own += watched_terms(model, name, bonus, als, best, pop)
    return own.astype(np.float32, copy=False)


def scores_as_new(model: Recommender, name: str, als: np.ndarray, best, pop: np.ndarray) -> np.ndarray:
    """Ranker `name`'s score, as never watched, of streamers with ALS scores `als` for a user
    whose best catalog ALS score is `best` (or one best per streamer); `pop`: the ranker's
    popularity term of each."""
    c, w = model.linear[name]
    scores = als * float(w[ALS] - w[GAP])
    # Python floats where one number: numpy scalars cost more per operation.
    scores += float(c + w[GAP] * best) if np.isscalar(best) else c + w[GAP] * best
    scores += pop
    return scores


def watched_terms(
    model: Recommender, name: str, bonus: np.ndarray, als: np.ndarray, best, pop: np.ndarray
) -> np.ndarray:
    """What watching adds to ranker `name`'s score: the history terms `bonus` and, for a
    ranker split by watched, its shifted ALS, gap and popularity (`pop`: pop_feature) weights."""
    shift = model.rankers[name].watched_shift
    if shift is None:
        return bonus
    # shift . (als, best - als, pop), in Python floats: numpy scalars cost more per operation
    terms = als * float(shift[ALS] - shift[GAP])
    terms += float(shift[GAP] * best) if np.isscalar(best) else shift[GAP] * best
    terms += pop * float(shift[POP])
    terms += bonus
    return terms

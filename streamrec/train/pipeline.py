"""The training pipeline: from clean sessions to a complete model. `als_fit.py` is its CLI;
Offline evaluation and tuning train through it too.

    from streamrec.train.pipeline import TrainParams, train
    model = train(read_sessions("sessions.csv"), TrainParams())

Steps: learn the ranker's weights on a validation period (ALS fitted on the time before it,
labels from the period itself); refresh ALS on all the data from those factors; rank every
viewer's lists. Every knob is a field of TrainParams, with its unit and range.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import STRENGTHS, IdMap, Interactions, aggregate
from streamrec.data.sessions import END, START, STREAMER, UID, Sessions, read_sessions
from streamrec.model.popular import POPULARITY_BY, PopularityRecommender
from streamrec.model.ranking import (
    RankerName,
    RankerWeights,
    catalog_scores,
    fit_logistic,
    fit_logistic_split,
    pair_features,
    row_entries,
    top_n_rows,
)
from streamrec.model.recommender import Recommender
from streamrec.model.scoring import build_lists
from streamrec.progress import Timer, als_callback, interactive

log = logging.getLogger("training")

RANKER_MAX_USERS = 5_000  # validation users the rankers learn from (a deterministic sample)
RANKER_NEGATIVES = 40  # sampled negative pairs per validation user
RANKER_ALS_CANDIDATES = 100  # top ALS streamers per validation user among the ranker's pairs
RANKER_POPULAR_CANDIDATES = 20  # most popular streamers among them
RANKER_RANDOM_CANDIDATES = 20  # uniformly drawn catalog streamers among them
RANKER_LIVE_CANDIDATES = 20  # top ALS and random live streamers per viewer for the live ranker


@dataclass
class TrainParams:
    factors: int = 64  # latent dimensions; 32-128
    iterations: int = 15  # ALS sweeps in all: the last refresh_iterations on all the data; 10-30
    refresh_iterations: int = 1  # of those, sweeps on all the data, warm-started; 1-5
    regularization: float = 0.1  # L2 on factors (implicit does not scale it by counts); 0.01-1
    alpha: float = 10.0  # confidence = alpha * strength (implicit adds no 1); 1-40
    random_state: int = 42  # seed of the factor initialisation: same data, same model
    strength: str = "binary"  # how a pair's sessions become one number: see STRENGTHS
    popularity_by: str = "viewers"  # popularity measure for cold start: see model/popular.py
    popularity_window: float = 0.25  # recent share of the time span popularity counts; (0, 1]
    min_viewers: int = 2  # distinct viewers a streamer needs to be recommended to newcomers
    catalog_size: int = 5000  # at most this many streamers (the most viewed) for newcomers
    validation_fraction: float = 0.1  # last share of the time span the ranker learns from


def fit_als(
    user_items,
    params: TrainParams,
    show_progress: bool = False,
    init=None,
    iterations: int | None = None,
    desc: str = "als",
):
    """implicit's CPU ALS (never the GPU factory) on a users x streamers CSR, BLAS single-threaded
    as implicit requires (its own threads do the parallel work). `init` = (user, item) factors to
    start from instead of random ones. `show_progress`: implicit's bar on a terminal, rate-limited
    log lines (named `desc`) otherwise."""
    iterations = iterations or params.iterations
    with threadpool_limits(1, "blas"):
        als = new_als(params, iterations)
        if init is not None:
            als.user_factors, als.item_factors = init
        bar = show_progress and interactive()
        callback = als_callback(desc, iterations) if show_progress and not bar else None
        als.fit(user_items, show_progress=bar, callback=callback)
    return als


def new_als(params: TrainParams, iterations: int):
    """implicit's CPU ALS with the params' hyperparameters, not fitted (BLAS held to one thread
    by the caller: implicit checks it when constructed)."""
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=iterations,
        random_state=params.random_state,
    )


def warm_start(
    previous: Recommender, users: IdMap, streamers: IdMap, params: TrainParams
) -> tuple[np.ndarray, np.ndarray]:
    """Factors for the ids of `users` and `streamers`: copied from `previous` where it knows the
    id, small random values (implicit's own initialisation) for ids it has never seen."""
    rng = np.random.default_rng(params.random_state)

    def carry(ids, old_ids, old_factors) -> np.ndarray:
        out = (rng.random((len(ids), params.factors), dtype=np.float32) * 0.01).astype(old_factors.dtype)
        rows = old_ids.rows(ids.ids)
        known = rows >= 0
        out[known] = old_factors[rows[known]]
        return out

    return (
        carry(users, previous.users, previous.als.user_factors),
        carry(streamers, previous.streamers, previous.als.item_factors),
    )


def choose_catalog(inter: Interactions, params: TrainParams) -> np.ndarray:
    """Streamer rows worth recommending to someone who never watched them: see catalog_of."""
    return catalog_of(np.bincount(inter.count.indices, minlength=len(inter.streamers)), params)


def catalog_of(viewers: np.ndarray, params: TrainParams) -> np.ndarray:
    """Of streamers with `viewers` distinct viewers each, the rows with at least `min_viewers`,
    the `catalog_size` most viewed, sorted. A streamer seen by one viewer in weeks has no
    evidence behind it; the tail costs ranking time and gains little."""
    eligible = np.flatnonzero(viewers >= params.min_viewers)
    if len(eligible) == 0:  # a tiny log: anything goes
        eligible = np.arange(len(viewers))
    order = np.lexsort((eligible, -viewers[eligible]))
    return np.sort(eligible[order[: params.catalog_size]])


def fit_base(
    frame: pd.DataFrame,
    time_format: str,
    params: TrainParams,
    timer: Timer | None = None,
    show_progress: bool = False,
    previous: Recommender | None = None,
) -> tuple[Recommender, Interactions]:
    """ALS, history and popularity on `frame`, with prior ranker weights and no ranked lists.
    With `previous`, ALS starts from its factors and runs `refresh_iterations` sweeps."""
    timer = timer or Timer()
    with timer("aggregate"):
        inter = aggregate(frame, time_format)
        user_items = inter.strength(params.strength)
    with timer("als"):
        if previous is None:
            als = fit_als(user_items, params, show_progress, desc=f"{timer.prefix}als")
        else:
            init = warm_start(previous, inter.users, inter.streamers, params)
            iterations = params.refresh_iterations
            als = fit_als(user_items, params, show_progress, init, iterations, desc=f"{timer.prefix}als")
    with timer("popularity"):
        pop = PopularityRecommender(params.popularity_by, params.popularity_window)
        pop.fit(frame, time_format, streamers=inter.streamers)
        popularity = np.zeros(len(inter.streamers), dtype=np.float32)
        popularity[pop.ranking] = pop.scores
    model = Recommender(
        als=als,
        users=inter.users,
        streamers=inter.streamers,
        count=inter.count,
        watch_time=inter.watch_time,
        last_seen=inter.last_seen,
        recent=inter.recent,
        decayed=inter.decayed,
        popularity=popularity,
        popular_ranking=pop.ranking,
        catalog=choose_catalog(inter, params),
        time_max=inter.time_max,
        time_span=max(inter.time_max - inter.time_min, 1),
        rankers=RankerWeights.priors(),
        strength=params.strength,
    )
    return model, inter


def live_at(streamers, frame: pd.DataFrame, steps: np.ndarray) -> dict[int, np.ndarray]:
    """For each of `steps`, the sorted rows (in the id map `streamers`) of the streamers with a
    session in `frame` covering it: the streamers live at that step."""
    steps = np.unique(steps)
    start, end = frame[START].to_numpy(), frame[END].to_numpy()
    cols = streamers.rows(frame[STREAMER])
    lo, hi = np.searchsorted(steps, start, "left"), np.searchsorted(steps, end, "right")
    n = np.maximum(hi - lo, 0)
    which = np.repeat(np.arange(len(frame)), n)
    step_index = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
    pairs = pd.DataFrame({"step": steps[step_index], "streamer": cols[which]})
    pairs = pairs[pairs["streamer"] >= 0].drop_duplicates()
    grouped = pairs.groupby("step")["streamer"].agg(lambda s: np.sort(s.to_numpy()))
    return {int(t): grouped.get(t, np.empty(0, dtype=np.int64)) for t in steps}


def watched_pairs(base: Recommender, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (position in `users`, streamer row) the users watched, user by user."""
    at, entries = row_entries(base.count.indptr, users)
    return at, base.count.indices[entries].astype(np.int64)


LiveAt = Callable[[np.ndarray], dict[int, np.ndarray]]  # steps -> sorted streamer rows live at each


def learn_live_ranker(
    base: Recommender,
    future: pd.DataFrame,
    live_at_steps: LiveAt,
    users: np.ndarray,
    best: np.ndarray,
    rng: np.random.Generator,
) -> RankerWeights | None:
    """The `live` ranker, behind live-only lists: what a viewer watches next among the streamers
    live at that moment. For each of `users` (sorted; `best` their best catalog ALS scores), the
    first session in `future` is the positive, and the candidates are the streamers live at its
    start (`live_at_steps`): their watched ones, their top ALS ones and a random sample. None
    when there is nothing to learn from."""
    rows = base.users.rows(future[UID])
    first = pd.DataFrame({"u": rows, "i": base.streamers.rows(future[STREAMER]), "t": future[START].to_numpy()})
    first = first[np.isin(first["u"].to_numpy(), users)].sort_values("t", kind="stable").drop_duplicates("u")
    first = first[first["i"] >= 0]
    if first.empty:
        return None
    live = live_at_steps(first["t"].to_numpy())
    pair_u, pair_i, label = [], [], []
    factors = base.als.item_factors
    # The viewers whose next session starts at the same step share the candidates: one batch each.
    for step, group in first.groupby("t", sort=False):
        cands = live[int(step)]  # sorted
        if len(cands) < 2:
            continue
        us, targets = group["u"].to_numpy(), group["i"].to_numpy()
        n = min(RANKER_LIVE_CANDIDATES, len(cands))
        top = cands[top_n_rows(base.als.user_factors[us] @ factors[cands].T, n)]
        sampled = cands[rng.integers(0, len(cands), (len(us), n))]
        watched_u, watched_i = watched_pairs(base, us)
        at = np.minimum(np.searchsorted(cands, watched_i), len(cands) - 1)
        mine = cands[at] == watched_i  # watched and live now
        at = np.minimum(np.searchsorted(cands, targets), len(cands) - 1)
        reachable = cands[at] == targets  # the streamer they went on to watch was live (a known one is)
        who = np.concatenate([np.repeat(np.arange(len(us)), 2 * n), watched_u[mine], np.flatnonzero(reachable)])
        what = np.concatenate([np.concatenate([top, sampled], axis=1).ravel(), watched_i[mine], targets[reachable]])
        key = np.unique(who.astype(np.int64) * base.n_streamers + what)
        who, what = key // base.n_streamers, key % base.n_streamers
        pair_u.append(us[who])
        pair_i.append(what)
        label.append(what == targets[who])
    if not pair_u:
        return None
    pu, pi, y = np.concatenate(pair_u), np.concatenate(pair_i), np.concatenate(label)
    if y.all() or not y.any():
        return None
    user_of = np.searchsorted(users, pu)
    n_pairs = np.bincount(user_of, minlength=len(users))
    x = pair_features(base, pu, pi, best[user_of])
    # ALS, gap and popularity weigh differently for the viewer's own streamers and for new ones:
    # one order of the new ones (ALS's), another of the watched ones, each calibrated to the other.
    return fit_logistic_split(x, y.astype(float), 1.0 / n_pairs[user_of])


def learn_rankers(
    base: Recommender,
    future: pd.DataFrame,
    max_users: int = RANKER_MAX_USERS,
    seed: int = 0,
    live: LiveAt | None = None,
) -> dict[str, RankerWeights]:
    """Fit the `all` and `new` rankers, and with `live` (which of base's streamers are live at
    given steps of `future`) the `live` one (learn_live_ranker). For users of `base` active in `future`, the
    pairs are their watched streamers, their top ALS streamers, the most popular ones and a
    random sample of the catalog (the ranker scores the whole catalog when serving), labelled by
    whether the user watched them in `future`. Each user weighs the same; negatives are
    subsampled to RANKER_NEGATIVES per user and up-weighted to compensate."""
    rows = base.users.rows(future[UID])
    cols = base.streamers.rows(future[STREAMER])
    keep = (rows >= 0) & (cols >= 0)
    positive_keys = pd.unique(rows[keep].astype(np.int64) * base.n_streamers + cols[keep])
    users = np.sort(pd.unique(rows[keep]))
    rng = np.random.default_rng(seed)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    priors = RankerWeights.priors()
    if len(users) == 0:
        return priors

    # ALS scores against the catalog, a block of users at a time (bounded memory whatever
    # RANKER_MAX_USERS is): each user's best score and top candidates.
    best = np.empty(len(users), dtype=np.float32)
    als_top = np.empty((len(users), min(RANKER_ALS_CANDIDATES, len(base.catalog))), dtype=np.int64)
    for lo in range(0, len(users), 2000):
        s = catalog_scores(base, users[lo : lo + 2000])
        best[lo : lo + 2000] = s.max(axis=1)
        als_top[lo : lo + 2000] = base.catalog[top_n_rows(s, als_top.shape[1])]
    random_items = base.catalog[rng.integers(0, len(base.catalog), (len(users), RANKER_RANDOM_CANDIDATES))]
    popular = np.broadcast_to(
        base.popular_ranking[:RANKER_POPULAR_CANDIDATES], (len(users), min(RANKER_POPULAR_CANDIDATES, base.n_streamers))
    )
    cand_u = np.repeat(users, als_top.shape[1] + random_items.shape[1] + popular.shape[1])
    cand_i = np.concatenate([als_top, random_items, popular], axis=1).ravel()
    watched_at, watched_i = watched_pairs(base, users)
    watched_u = users[watched_at]
    key = np.sort(
        pd.unique(np.concatenate([cand_u * base.n_streamers + cand_i, watched_u * base.n_streamers + watched_i]))
    )
    pair_u, pair_i = key // base.n_streamers, key % base.n_streamers
    y = np.isin(key, positive_keys)

    # Subsample negatives per user, weight every user the same.
    n_pairs = np.bincount(np.searchsorted(users, pair_u), minlength=len(users))
    n_neg = n_pairs - np.bincount(np.searchsorted(users, pair_u), weights=y, minlength=len(users))
    user_of = np.searchsorted(users, pair_u)
    rate = np.minimum(1.0, RANKER_NEGATIVES / np.maximum(n_neg, 1))[user_of]
    sample = y | (rng.random(len(y)) < rate)
    weight = (np.where(y, 1.0, 1.0 / rate) / n_pairs[user_of])[sample]
    x = pair_features(base, pair_u[sample], pair_i[sample], best[user_of[sample]])
    y = y[sample]
    rankers: dict[str, RankerWeights] = {}
    for name, mask in ((RankerName.ALL, np.ones(len(y), bool)), (RankerName.NEW, x[:, 0] == 0)):
        if not (y[mask].any() and not y[mask].all()):
            rankers[name] = priors[name]
        elif name == RankerName.ALL:  # watched and new streamers: ALS and popularity weigh differently for each
            rankers[name] = fit_logistic_split(x, y.astype(float), weight)
        else:
            rankers[name] = fit_logistic(x[mask], y[mask].astype(float), weight[mask])
    if live is not None:
        live_ranker = learn_live_ranker(base, future, live, users, best, rng)
        if live_ranker is not None:
            rankers[RankerName.LIVE] = live_ranker
    return rankers


def validation_cut(lo: int, hi: int, fraction: float) -> int:
    """The first start time of the validation period: the last `fraction` of the span of session
    starts [lo, hi]. Both engines hold out the same sessions."""
    return int(np.ceil(hi - fraction * (hi - lo)))


def split_by_time(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(before, after, cut): `after` holds sessions starting in the last `fraction` of the span."""
    start = frame[START].to_numpy()
    cut = validation_cut(int(start.min()), int(start.max()), fraction)
    return frame[start < cut], frame[start >= cut], cut


def validation_params(params: TrainParams) -> TrainParams:
    """As many sweeps in all as a plain fit: most before the validation period, the rest
    (`refresh_iterations`) on all the data."""
    return replace(params, iterations=max(1, params.iterations - params.refresh_iterations))


class Engine(Protocol):
    """The steps of the recipe (`train_with`), run on one machine (`LocalEngine`) or on Spark
    (`train/spark.py`'s SparkEngine): what differs between them is how, never what."""

    def time_range(self) -> tuple[int, int]:
        """The first and the last session start."""
        ...

    def split_at(self, cut: int) -> bool:
        """Hold out the sessions starting at or after `cut`; False when either side is empty."""
        ...

    def fit_validation(self, params: TrainParams, timer: Timer) -> None:
        """ALS, history and popularity on the sessions before the cut."""
        ...

    def learn_rankers(self) -> dict[str, RankerWeights] | None:
        """The rankers, labelled by the held-out sessions (None: nothing to learn from)."""
        ...

    def fit_final(self, params: TrainParams, rankers: dict[str, RankerWeights], timer: Timer) -> Recommender:
        """ALS, history and popularity on all the sessions, and every viewer's ranked lists."""
        ...


def train_with(engine: Engine, params: TrainParams, timer: Timer | None = None) -> Recommender:
    """The recipe, once for every engine: ALS is fitted on the time before a validation period and
    the rankers' weights are learned on that period; then ALS is fitted on all the data (the local
    engine refreshes the validation factors with `refresh_iterations` sweeps) and every viewer's
    ranked lists are built with those rankers. A log too short to hold out a period gets the prior
    rankers."""
    timer = timer or Timer()
    cut = validation_cut(*engine.time_range(), params.validation_fraction)
    rankers = None
    if engine.split_at(cut):
        with timer("validation"):
            engine.fit_validation(validation_params(params), timer.sub("validation"))
        with timer("ranker"):
            rankers = engine.learn_rankers()
    else:
        log.warning("log too short to hold out a validation period; using prior ranker weights")
    return engine.fit_final(params, rankers or RankerWeights.priors(), timer)


class LocalEngine:
    """The recipe's steps on this machine: implicit's ALS, pandas and numpy."""

    def __init__(self, sessions: Sessions, show_progress: bool = False):
        self.frame, self.time_format = sessions.frame, sessions.time_format
        self.show_progress = show_progress
        self.past: pd.DataFrame | None = None
        self.future: pd.DataFrame | None = None
        self.cut = 0
        self.previous: Recommender | None = None  # the validation model; the final ALS starts from it

    def time_range(self) -> tuple[int, int]:
        start = self.frame[START].to_numpy()
        return int(start.min()), int(start.max())

    def split_at(self, cut: int) -> bool:
        start = self.frame[START].to_numpy()
        past, future = self.frame[start < cut], self.frame[start >= cut]
        if not (len(past) and len(future)):
            return False
        log.info("ALS on %s sessions before %s; ranker labels from %s after", f"{len(past):,}", cut, f"{len(future):,}")
        self.past, self.future, self.cut = past, future, cut
        return True

    def fit_validation(self, params: TrainParams, timer: Timer) -> None:
        assert self.past is not None, "split first"
        self.previous, _ = fit_base(self.past, self.time_format, params, timer, self.show_progress)
        self.past = None  # a copy of the rows: memory for the final fit

    def learn_rankers(self) -> dict[str, RankerWeights] | None:
        assert self.previous is not None and self.future is not None, "fit the validation model first"
        frame = self.frame
        live_source = frame[frame[END].to_numpy() >= self.cut]  # sessions that can be live after the cut
        streamers = self.previous.streamers
        rankers = learn_rankers(self.previous, self.future, live=lambda steps: live_at(streamers, live_source, steps))
        self.future = None
        return rankers

    def fit_final(self, params: TrainParams, rankers: dict[str, RankerWeights], timer: Timer) -> Recommender:
        model, _ = fit_base(self.frame, self.time_format, params, timer, self.show_progress, previous=self.previous)
        self.previous = None  # its factors and history: ~1 GB at a million viewers, not needed for the lists
        model.rankers = rankers
        with timer("lists"):
            build_lists(model, self.show_progress)
        return model


def train(
    sessions: Sessions, params: TrainParams, timer: Timer | None = None, show_progress: bool = False
) -> Recommender:
    """The whole model, on this machine (`train_with` a LocalEngine)."""
    return train_with(LocalEngine(sessions, show_progress), params, timer)


def fit_model(data: Sessions | str | Path, params: TrainParams | None = None) -> Recommender:
    """The whole model from a sessions file (or sessions already read), at `params` (default:
    TrainParams()). The founding description's name for `python als_fit.py` without the file:
    save it with `model_file.save_model`."""
    sessions = data if isinstance(data, Sessions) else read_sessions(data)
    return train(sessions, params or TrainParams())


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add_io_args(p: argparse.ArgumentParser, settings, model_help: str = "model file to write") -> None:
    """--data and --model, defaulting to the settings."""
    p.add_argument(
        "--data", default=settings.data_path or None, help="sessions CSV (plain or gzip); empty: demo sessions"
    )
    p.add_argument("--model", default=str(settings.model_path), help=model_help)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The flags of TrainParams, shared by streamrec-train and streamrec-evaluate."""
    d = TrainParams()
    p.add_argument("--factors", type=int, default=d.factors, help="ALS latent dimensions")
    p.add_argument("--iterations", type=int, default=d.iterations, help="ALS iterations in all")
    p.add_argument(
        "--refresh-iterations", type=int, default=d.refresh_iterations, help="of those, the last on all data"
    )
    p.add_argument("--regularization", type=float, default=d.regularization, help="ALS L2 regularization")
    p.add_argument("--alpha", type=float, default=d.alpha, help="ALS confidence scale")
    p.add_argument("--random-state", type=int, default=d.random_state, help="seed")
    p.add_argument("--strength", choices=sorted(STRENGTHS), default=d.strength, help="pair strength fed to ALS")
    p.add_argument("--popularity-by", choices=POPULARITY_BY, default=d.popularity_by, help="popularity measure")
    p.add_argument(
        "--popularity-window",
        type=float,
        default=d.popularity_window,
        help="recent share of the time span for popularity",
    )
    p.add_argument(
        "--min-viewers", type=int, default=d.min_viewers, help="viewers a streamer needs to be recommended to newcomers"
    )
    p.add_argument(
        "--catalog-size", type=int, default=d.catalog_size, help="most-viewed streamers recommendable to newcomers"
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=d.validation_fraction,
        help="last share of time the ranker learns from",
    )


def params_from_args(args: argparse.Namespace) -> TrainParams:
    params = TrainParams(**{k: getattr(args, k) for k in asdict(TrainParams())})
    checks = [
        (params.factors >= 1, f"--factors must be >= 1; got {params.factors}"),
        (params.iterations >= 1, f"--iterations must be >= 1; got {params.iterations}"),
        (params.refresh_iterations >= 1, f"--refresh-iterations must be >= 1; got {params.refresh_iterations}"),
        (params.catalog_size >= 1, f"--catalog-size must be >= 1; got {params.catalog_size}"),
        (params.regularization >= 0, f"--regularization must be >= 0; got {params.regularization}"),
        (params.alpha > 0, f"--alpha must be > 0; got {params.alpha}"),
        (0 < params.popularity_window <= 1, f"--popularity-window must be in (0, 1]; got {params.popularity_window}"),
        (params.min_viewers >= 1, f"--min-viewers must be >= 1; got {params.min_viewers}"),
        (
            0 < params.validation_fraction < 1,
            f"--validation-fraction must be in (0, 1); got {params.validation_fraction}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return params


class LogSummary(Protocol):
    """What a model's metadata says of the log it was trained on (Sessions, or a Spark log)."""

    rows_read: int
    dropped: dict[str, int]
    time_format: str

    @property
    def rows_used(self) -> int: ...


def model_metadata(
    model: Recommender,
    sessions: LogSummary,
    params: TrainParams,
    source: str,
    sha256: str | None,
    engine: str = "implicit",
) -> dict:
    """What a model file says about itself: when, from what, by which engine, with which settings
    and libraries (`sha256`: the source file's, None when it is not one local file)."""
    from streamrec.model.model_file import FORMAT_VERSION

    libraries = ("implicit", "numpy", "scipy", "pandas", "pyarrow") + (("pyspark",) if engine == "spark" else ())
    return {
        "format_version": FORMAT_VERSION,
        "engine": engine,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "source_sha256": sha256,
        "rows_read": sessions.rows_read,
        "rows_used": sessions.rows_used,
        "rows_dropped": dict(sessions.dropped),
        "time_format": sessions.time_format,
        "users": model.n_users,
        "streamers": model.n_streamers,
        "interactions": int(model.count.nnz),
        "ranker_learned": bool(model.rankers[RankerName.ALL].learned),
        "params": asdict(params),
        "versions": {p: version(p) for p in libraries},
    }

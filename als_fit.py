"""Train the recommender from a viewing-sessions CSV and save it to one model file.

    python als_fit.py                                  # demo sessions -> models/model.pkl
    python als_fit.py --data sessions.csv --model models/model.pkl
    python als_fit.py --data 100k_a.csv --factors 64 --iterations 15

Defaults come from the environment or `.env` (DATA_PATH, MODEL_PATH), then from the built-ins
below; `--help` shows them all. With no data configured it trains on the built-in demo sessions
(`demo_data.py`, written to DEMO_DATA_PATH the first time).

Steps: read and clean the sessions (`sessions.py`); learn the ranker's weights on a validation
period (ALS fitted on the time before it, labels from the period itself); fit ALS on all the data;
save atomically. A failed run leaves any previous model file untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cold_start import POPULARITY_BY, PopularityRecommender
from interactions import STRENGTHS, Interactions, aggregate
from ranking import RankerWeights, catalog_scores, fit_logistic, pair_features, top_n_rows
from recommender import FORMAT_VERSION, ModelError, Recommender, check_writable, save_model
from sessions import START, STREAMER, UID, DataError, Sessions, read_sessions

log = logging.getLogger("als_fit")

RANKER_MAX_USERS = 5_000  # validation users the ranker learns from (a deterministic sample)
RANKER_NEGATIVES = 40  # sampled negative pairs per validation user
RANKER_ALS_CANDIDATES = 100  # top ALS streamers per validation user among the ranker's pairs
RANKER_POPULAR_CANDIDATES = 20  # most popular streamers among them
RANKER_RANDOM_CANDIDATES = 20  # uniformly drawn catalog streamers among them


@dataclass
class TrainParams:
    factors: int = 64  # latent dimensions; 32-128
    iterations: int = 15  # ALS sweeps on the time before the validation period; 10-30
    refresh_iterations: int = 1  # further sweeps on all the data, warm-started; 1-5
    regularization: float = 0.1  # L2 on factors (implicit does not scale it by counts); 0.01-1
    alpha: float = 10.0  # confidence = alpha * strength (implicit adds no 1); 1-40
    random_state: int = 42  # seed of the factor initialisation: same data, same model
    strength: str = "binary"  # how a pair's sessions become one number: see STRENGTHS
    popularity_by: str = "viewers"  # popularity measure for cold start: see cold_start.py
    popularity_window: float = 0.25  # recent share of the time span popularity counts; (0, 1]
    min_viewers: int = 2  # distinct viewers a streamer needs to be recommended to newcomers
    catalog_size: int = 5000  # at most this many streamers (the most viewed) for newcomers
    validation_fraction: float = 0.1  # last share of the time span the ranker learns from


class Timer:
    """Logs each step with its duration and keeps them for the summary."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.steps[name] = timer.steps.get(name, 0.0) + time.perf_counter() - self.t0
                if exc[0] is None:
                    log.info("%-10s %.2fs", name, time.perf_counter() - self.t0)

        return _Step()


def fit_als(user_items, params: TrainParams, show_progress: bool = False, init=None, iterations: int | None = None):
    """implicit's CPU ALS (never the GPU factory) on a users x streamers CSR, BLAS single-threaded
    as implicit requires (its own threads do the parallel work). `init` = (user, item) factors to
    start from instead of random ones."""
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=iterations or params.iterations,
            random_state=params.random_state,
        )
        if init is not None:
            als.user_factors, als.item_factors = init
        als.fit(user_items, show_progress=show_progress)
    return als


def warm_start(previous: Recommender, inter: Interactions, params: TrainParams) -> tuple[np.ndarray, np.ndarray]:
    """Factors for `inter`'s ids: copied from `previous` where it knows the id, small random
    values (implicit's own initialisation) for ids it has never seen."""
    rng = np.random.default_rng(params.random_state)

    def carry(ids, old_ids, old_factors) -> np.ndarray:
        out = (rng.random((len(ids), params.factors), dtype=np.float32) * 0.01).astype(old_factors.dtype)
        rows = old_ids.rows(ids.ids)
        known = rows >= 0
        out[known] = old_factors[rows[known]]
        return out

    return (
        carry(inter.users, previous.users, previous.als.user_factors),
        carry(inter.streamers, previous.streamers, previous.als.item_factors),
    )


def choose_catalog(inter: Interactions, params: TrainParams) -> np.ndarray:
    """Streamer rows worth recommending to someone who never watched them: at least
    `min_viewers` distinct viewers, the `catalog_size` most viewed. A streamer seen by one
    viewer in weeks has no evidence behind it; the tail costs ranking time and gains little."""
    viewers = np.bincount(inter.count.indices, minlength=len(inter.streamers))
    eligible = np.flatnonzero(viewers >= params.min_viewers)
    if len(eligible) == 0:  # a tiny log: anything goes
        eligible = np.arange(len(inter.streamers))
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
            als = fit_als(user_items, params, show_progress)
        else:
            init = warm_start(previous, inter, params)
            als = fit_als(user_items, params, show_progress, init=init, iterations=params.refresh_iterations)
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
        popularity=popularity,
        popular_ranking=pop.ranking,
        catalog=choose_catalog(inter, params),
        time_max=inter.time_max,
        time_span=max(inter.time_max - inter.time_min, 1),
        rankers={"all": RankerWeights.prior(), "new": RankerWeights.prior(discovery=True)},
        strength=params.strength,
    )
    return model, inter


def learn_rankers(
    base: Recommender, future: pd.DataFrame, max_users: int = RANKER_MAX_USERS, seed: int = 0
) -> dict[str, RankerWeights]:
    """Fit the `all` and `new` rankers. For users of `base` active in `future`, the pairs are
    their watched streamers, their top ALS streamers, the most popular ones and a random sample
    of the catalog (the ranker scores the whole catalog when serving), labelled by whether the
    user watched them in `future`. Each user weighs the same; negatives are subsampled to
    RANKER_NEGATIVES per user and up-weighted to compensate."""
    rows = base.users.rows(future[UID])
    cols = base.streamers.rows(future[STREAMER])
    keep = (rows >= 0) & (cols >= 0)
    positive_keys = pd.unique(rows[keep].astype(np.int64) * base.n_streamers + cols[keep])
    users = np.sort(pd.unique(rows[keep]))
    rng = np.random.default_rng(seed)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, max_users, replace=False))
    priors = {"all": RankerWeights.prior(), "new": RankerWeights.prior(discovery=True)}
    if len(users) == 0:
        return priors

    s = catalog_scores(base, users)
    best = s.max(axis=1)
    als_top = base.catalog[top_n_rows(s, min(RANKER_ALS_CANDIDATES, s.shape[1]))]
    random_items = base.catalog[rng.integers(0, len(base.catalog), (len(users), RANKER_RANDOM_CANDIDATES))]
    popular = np.broadcast_to(
        base.popular_ranking[:RANKER_POPULAR_CANDIDATES], (len(users), min(RANKER_POPULAR_CANDIDATES, base.n_streamers))
    )
    cand_u = np.repeat(users, als_top.shape[1] + random_items.shape[1] + popular.shape[1])
    cand_i = np.concatenate([als_top, random_items, popular], axis=1).ravel()
    lo, hi = base.count.indptr[users], base.count.indptr[users + 1]
    watched_u = np.repeat(users, hi - lo)
    watched_i = np.concatenate([base.count.indices[a:b] for a, b in zip(lo, hi, strict=True)])
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
    rankers = {}
    for name, mask in (("all", np.ones(len(y), bool)), ("new", x[:, 0] == 0)):
        if y[mask].any() and not y[mask].all():
            rankers[name] = fit_logistic(x[mask], y[mask].astype(float), weight[mask])
        else:
            rankers[name] = priors[name]
    return rankers


def split_by_time(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(before, after, cut): `after` holds sessions starting in the last `fraction` of the span."""
    start = frame[START].to_numpy()
    lo, hi = int(start.min()), int(start.max())
    cut = int(np.ceil(hi - fraction * (hi - lo)))
    return frame[start < cut], frame[start >= cut], cut


def train(
    sessions: Sessions, params: TrainParams, timer: Timer | None = None, show_progress: bool = False
) -> Recommender:
    """The whole model. ALS is fitted on the time before a validation period and the ranker's
    weights are learned on that period; then ALS is refreshed on all the data from those factors
    (a few sweeps instead of a second full fit) and every user's ranked lists are built."""
    timer = timer or Timer()
    frame, fmt = sessions.frame, sessions.time_format
    past, future, cut = split_by_time(frame, params.validation_fraction)
    previous, rankers = None, None
    if len(past) and len(future):
        log.info("ALS on %s sessions before %s; ranker labels from %s after", f"{len(past):,}", cut, f"{len(future):,}")
        with timer("validation"):
            previous, _ = fit_base(past, fmt, params, Timer(), show_progress)
        with timer("ranker"):
            rankers = learn_rankers(previous, future)
    else:
        log.warning("log too short to hold out a validation period; using prior ranker weights")
    model, _ = fit_base(frame, fmt, params, timer, show_progress, previous=previous)
    if rankers is not None:
        model.rankers = rankers
    with timer("lists"):
        model.build_lists()
    return model


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_parser(settings) -> argparse.ArgumentParser:
    d = TrainParams()
    p = argparse.ArgumentParser(
        description="Train the streamer recommender on a sessions CSV.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", default=settings.data_path or None, help="sessions CSV (plain or gzip); empty: demo sessions"
    )
    p.add_argument("--model", default=str(settings.model_path), help="model file to write")
    p.add_argument("--factors", type=int, default=d.factors, help="ALS latent dimensions")
    p.add_argument("--iterations", type=int, default=d.iterations, help="ALS iterations before the validation period")
    p.add_argument(
        "--refresh-iterations", type=int, default=d.refresh_iterations, help="ALS iterations on all data, warm-started"
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
    return p


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


def resolve_data(data: str | None, settings) -> tuple[Path, str]:
    """(path, source label). No data configured: the demo sessions, generated once."""
    if data:
        return Path(data), str(data)
    import demo_data

    path = Path(settings.demo_data_path)
    if not path.exists():
        log.info("no data configured (DATA_PATH or --data): generating demo sessions at %s", path)
        demo_data.write(demo_data.generate(), path)
    return path, f"demo ({path})"


def main(argv: list[str] | None = None) -> int:
    import evaluation  # it imports this module, so not at the top
    from settings import get_settings

    settings = get_settings()
    parser = build_parser(settings)
    parser.add_argument("--evaluate", action="store_true", help="first print the offline evaluation (evaluation.py)")
    evaluation.add_evaluation_args(parser)
    parser.add_argument("--if-missing", action="store_true", help="do nothing if the model file already exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    if args.if_missing and Path(args.model).is_file():
        print(f"model {args.model} exists; not retraining (run without --if-missing to retrain)")
        return 0
    try:
        params = params_from_args(args)
        evaluation.check_evaluation_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    timer = Timer()
    try:
        check_writable(args.model)
        path, source = resolve_data(args.data, settings)
        with timer("read"):
            sessions = read_sessions(path)
        log.info(
            "%s: %s rows, %s layout, %s times; %s",
            path,
            f"{sessions.rows_read:,}",
            sessions.layout,
            sessions.time_format,
            sessions.drop_summary(),
        )
        if args.evaluate:
            out = evaluation.report_path(args.model, args.protocol)
            evaluation.run(sessions, params, args.test_fraction, out, args.protocol)
        model = train(sessions, params, timer, show_progress=sys.stderr.isatty())
        with timer("hash"):
            sha = file_sha256(path)
        model.metadata = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "source_sha256": sha,
            "rows_read": sessions.rows_read,
            "rows_used": sessions.rows_used,
            "rows_dropped": dict(sessions.dropped),
            "time_format": sessions.time_format,
            "users": model.n_users,
            "streamers": model.n_streamers,
            "interactions": int(model.count.nnz),
            "ranker_learned": bool(model.rankers["all"].learned),
            "params": asdict(params),
            "versions": {p: version(p) for p in ("implicit", "numpy", "scipy", "pandas")},
        }
        with timer("save"):
            size = save_model(model, args.model)
    except (DataError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    steps = ", ".join(f"{k} {v:.2f}s" for k, v in timer.steps.items())
    ranker = "learned on the validation period" if model.rankers["all"].learned else "prior weights"
    print(
        f"trained on {source}: {sessions.rows_read:,} rows read, {sessions.drop_summary()}; "
        f"{model.n_users:,} users, {model.n_streamers:,} streamers, {model.count.nnz:,} interactions\n"
        f"ranker: {ranker}\n"
        f"time: {steps}; total {sum(timer.steps.values()):.2f}s\n"
        f"model: {args.model} ({size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

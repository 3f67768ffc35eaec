"""Train on Spark: the same model file, from a log that outgrows one machine.

    python als_fit.py --engine spark --data sessions/ --spark-master 'local[*]'
    spark-submit --master yarn als_fit.py --engine spark --data hdfs:///sessions/ --model model.pkl

Reading, cleaning, aggregation, popularity, the catalog, ALS (MLlib's) and every viewer's ranker
features and ranked lists run on the executors. The driver collects what the one model file holds
(factors, per-pair history, lists) and writes it through `model_file.save_model`, the writer of
the default engine, so `platform.py` cannot tell which engine trained a model. SCALE.md gives
what each step costs and what the driver holds at Twitch's 15.5M viewers.

The log is read on Spark by `train/spark_log.py`, by the default engine's input rules.

MLlib's implicit ALS is not implicit's; `mllib_als` maps the hyperparameters so that the same
flags give comparable models (see its docstring and SCALE.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
from implicit.cpu.als import AlternatingLeastSquares

from streamrec.data.interactions import (
    DECAY_SCALE,
    RECENT_SESSIONS,
    STRENGTHS,
    IdMap,
    csr_from_entries,
    extra_length,
)
from streamrec.data.sessions import (
    END,
    START,
    STREAMER,
    UID,
    Sessions,
)
from streamrec.model.ranking import RankerName, RankerWeights
from streamrec.model.recommender import LIST_LENGTH, Recommender
from streamrec.model.scoring import build_lists
from streamrec.progress import Timer
from streamrec.train.pipeline import RANKER_MAX_USERS, TrainParams, catalog_of, learn_rankers, train_with
from streamrec.train.spark_log import SparkLog, log_from_sessions, read_log, spark_session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger("training")

COLLECT_BYTES = 256 << 20  # the model's arrays come to the driver in slices of about this size

# --- the pipeline -------------------------------------------------------------------------------


def mllib_als(params: TrainParams, pairs_per_user: float) -> dict:
    """MLlib ALS settings that mean what `params` mean to implicit.

    - Confidence: implicit weighs an observed pair alpha * r; MLlib 1 + alpha * r. MLlib is given
      alpha 1 and the rating alpha * r - 1, so its confidence is alpha * r exactly (floored at 1 +
      1e-6 where alpha * r <= 1: MLlib never weighs an observed pair below an unobserved one).
    - Regularization: implicit adds lambda * I to every solve; MLlib (ALS-WR) lambda * n, n the
      viewer's (or streamer's) number of pairs. MLlib gets lambda / (mean pairs per viewer), so
      the average viewer is regularized as implicit regularizes every one.
    - Everything else (factors, sweeps, seed) carries over as is."""
    return {
        "rank": params.factors,
        "maxIter": params.iterations,
        "regParam": params.regularization / max(pairs_per_user, 1.0),
        "alpha": 1.0,
        "seed": params.random_state,
        "implicitPrefs": True,
        "nonnegative": False,
    }


def _rating(params: TrainParams):
    """The rating column MLlib fits on (see mllib_als): alpha * strength - 1, above 0."""
    from pyspark.sql import functions as F

    count, watch = F.col("count"), F.col("watch")
    strength = {
        "sessions": count,
        "log_sessions": F.log1p(count),
        "watch_time": watch,
        "log_watch_time": F.log1p(watch),
        "binary": F.lit(1.0),
    }[params.strength]
    assert set(STRENGTHS) == {"sessions", "log_sessions", "watch_time", "log_watch_time", "binary"}
    return F.greatest(F.lit(params.alpha) * strength - 1.0, F.lit(1e-6)).cast("float")


def _arrow(df):
    """A small Spark DataFrame on the driver as a pyarrow Table."""
    return df.toArrow()


@dataclass
class _Indexed:
    """The log with integer rows for its ids, and the id maps (built on the driver)."""

    sessions: DataFrame  # u, s (int32), time_start, time_end
    users: IdMap
    streamers: IdMap
    user_index: DataFrame  # uid, u


def _index(spark, slog: SparkLog) -> _Indexed:
    """Rows for every id: the distinct ids are collected once (the model file stores them), and
    joined back (streamers broadcast, users shuffled)."""
    from pyspark.sql import functions as F

    def ids(column: str, name: str) -> tuple[IdMap, DataFrame]:
        table = _arrow(slog.frame.select(column).distinct())
        log.info("driver: %s distinct %s, %.1f MB", f"{table.num_rows:,}", column, table.nbytes / 1e6)
        names = table.column(0).to_numpy(zero_copy_only=False)
        rows = pa.table({column: table.column(0), name: np.arange(len(names), dtype=np.int32)})
        return IdMap.from_ids(names), spark.createDataFrame(rows)

    users, user_index = ids(UID, "u")
    streamers, streamer_index = ids(STREAMER, "s")
    sessions = slog.frame.join(user_index, UID).join(F.broadcast(streamer_index), STREAMER)
    return _Indexed(sessions.select("u", "s", START, END), users, streamers, user_index)


def _pairs(sessions, time_format: str):
    """Per (viewer, streamer): sessions, watch time, last time_end, sessions among the viewer's
    last RECENT_SESSIONS and time-decayed sessions, as `interactions.aggregate` computes them;
    with the log's (time_min, time_max)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    span = sessions.agg(F.least(F.min(START), F.min(END)).alias("lo"), F.greatest(F.max(START), F.max(END)).alias("hi"))
    lo, hi = span.first()
    scale = DECAY_SCALE * max(hi - lo, 1)
    latest = Window.partitionBy("u").orderBy(F.col(START).desc(), F.col(END).desc())
    length = (F.col(END) - F.col(START)).cast("double") + extra_length(time_format)
    pairs = (
        sessions.withColumn("recent", (F.row_number().over(latest) <= RECENT_SESSIONS).cast("double"))
        .groupBy("u", "s")
        .agg(
            F.count(F.lit(1)).cast("float").alias("count"),
            F.sum(length).cast("float").alias("watch"),
            F.max(F.col(END)).cast("double").alias("last"),
            F.sum("recent").cast("float").alias("recent"),
            F.sum(F.exp(-(F.lit(hi) - F.col(END)) / scale)).cast("float").alias("decayed"),
        )
    )
    return pairs, int(lo), int(hi)


def _per_streamer(df, n: int, column: str = "value") -> np.ndarray:
    """A (s, value) DataFrame as a dense array over streamer rows (0 where absent)."""
    table = _arrow(df)
    out = np.zeros(n, dtype=np.float64)
    out[table.column("s").to_numpy()] = table.column(column).to_numpy()
    return out


def _popularity(sessions, params: TrainParams, n_streamers: int, time_format: str) -> tuple[np.ndarray, np.ndarray]:
    """(popularity per streamer row, rows most popular first), as cold_start measures it: over the
    last `popularity_window` of the time span of starts, ties by row."""
    from pyspark.sql import functions as F

    lo, hi = sessions.agg(F.min(START), F.max(START)).first()
    recent = sessions.filter(F.col(START) >= hi - params.popularity_window * (hi - lo))
    if params.popularity_by == "viewers":
        values = recent.groupBy("s").agg(F.countDistinct("u").alias("value"))
    elif params.popularity_by == "sessions":
        values = recent.groupBy("s").agg(F.count(F.lit(1)).alias("value"))
    else:
        length = (F.col(END) - F.col(START)).cast("double") + extra_length(time_format)
        values = recent.groupBy("s").agg(F.sum(length).alias("value"))
    scores = _per_streamer(values, n_streamers)
    ranking = np.argsort(-scores, kind="stable")
    return scores.astype(np.float32), ranking


def _fit_als(
    pairs: DataFrame, params: TrainParams, n_users: int, n_streamers: int
) -> tuple[AlternatingLeastSquares, DataFrame]:
    """MLlib ALS on the pairs: (an implicit model object holding the streamer factors, the
    viewer factors as a DataFrame (id, features) left on the executors). Serving solves unknown
    viewers against these streamer factors with implicit's recalculate_user and the same
    hyperparameters."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    n_pairs = pairs.count()
    ratings = pairs.select(F.col("u").alias("user"), F.col("s").alias("item"), _rating(params).alias("rating"))
    fitted = ALS(userCol="user", itemCol="item", ratingCol="rating", **mllib_als(params, n_pairs / max(n_users, 1)))
    model = fitted.fit(ratings)

    def dense(df, n: int) -> np.ndarray:
        table = _arrow(df)
        out = np.zeros((n, params.factors), dtype=np.float32)
        rows = table.column("id").to_numpy()
        out[rows] = table.column("features").combine_chunks().flatten().to_numpy().reshape(len(rows), params.factors)
        return out

    als = AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_state,
    )
    als.item_factors = dense(model.itemFactors, n_streamers)
    return als, model.userFactors


@dataclass
class _Base:
    """What the item side of a model needs, computed on Spark for one slice of the log."""

    pairs: DataFrame  # of _pairs, persisted
    als: AlternatingLeastSquares  # streamer factors (viewer factors: user_factors)
    user_factors: DataFrame  # id (viewer row), features
    popularity: np.ndarray
    popular_ranking: np.ndarray
    catalog: np.ndarray
    time_min: int
    time_max: int

    def item_side(self, rankers: dict[str, RankerWeights]) -> dict:
        """What every viewer's ranking shares, as plain arrays (shipped to the executors)."""
        return {
            "n_streamers": len(self.popularity),
            "item_factors": self.als.item_factors,
            "popularity": self.popularity,
            "popular_ranking": self.popular_ranking,
            "catalog": self.catalog,
            "time_max": self.time_max,
            "time_span": max(self.time_max - self.time_min, 1),
            "rankers": rankers,
        }


def _fit_base(sessions, params: TrainParams, n_users: int, n_streamers: int, time_format: str, timer: Timer) -> _Base:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    with timer("aggregate"):
        pairs, lo, hi = _pairs(sessions, time_format)
        pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
        viewers = _per_streamer(pairs.groupBy("s").agg(F.count(F.lit(1)).alias("value")), n_streamers)
    with timer("als"):
        als, user_factors = _fit_als(pairs, params, n_users, n_streamers)
    with timer("popularity"):
        popularity, ranking = _popularity(sessions, params, n_streamers, time_format)
    present = np.flatnonzero(viewers > 0)
    catalog = present[catalog_of(viewers[present], params)]
    return _Base(pairs, als, user_factors, popularity, ranking, catalog, lo, hi)


def _model(side: dict, als, users: IdMap, streamers: IdMap, params: TrainParams, **history) -> Recommender:
    """A Recommender of `users` over an item side (`_Base.item_side`); the driver's models and
    each executor batch's are built here."""
    return Recommender(
        als=als,
        users=users,
        streamers=streamers,
        popularity=side["popularity"],
        popular_ranking=side["popular_ranking"],
        catalog=side["catalog"],
        time_max=side["time_max"],
        time_span=side["time_span"],
        rankers=side["rankers"],
        strength=params.strength,
        **history,
    )


_RANKED = (
    "u int, s array<int>, count array<float>, watch array<float>, last array<double>, "
    "recent array<float>, decayed array<float>, history_bonus array<float>, live_bonus array<float>, "
    "features array<float>, best float, "
    "all_ids array<int>, all_scores array<float>, new_ids array<int>, new_scores array<float>"
)


def _lists_on_executors(pairs, user_factors, item_side: dict, params: TrainParams):
    """Per viewer, on the executors: the history terms of each of their pairs (`all` and live
    rankers) and their ranked lists, by the code the default engine runs (`Recommender`,
    `ranked_lists`) on a model of one Arrow batch of viewers. One row per viewer (_RANKED)."""
    from pyspark.sql import functions as F

    entries = pairs.groupBy("u").agg(
        F.array_sort(F.collect_list(F.struct("s", "count", "watch", "last", "recent", "decayed"))).alias("e")
    )
    rows = entries.join(user_factors, entries["u"] == user_factors["id"]).select("u", "e", "features")

    def rank(batches):
        for batch in batches:
            if batch.num_rows:
                yield _rank_batch(batch, item_side, params)

    return rows.mapInArrow(rank, _RANKED)


def _placeholder_ids(n: int) -> IdMap:
    """An id map of n rows with no names: batch ranking reads sizes only, never ids."""
    out = IdMap.__new__(IdMap)
    out._n = n
    return out


def _rank_batch(batch, item_side: dict, params: TrainParams):
    """One Arrow batch of viewers (u, their sorted entries e, their factors) -> _RANKED rows."""
    import scipy.sparse as sp

    n = batch.num_rows
    e = batch.column("e")
    offsets = e.offsets.to_numpy()
    indptr = (offsets - offsets[0]).astype(np.int64)
    struct = e.flatten()  # these viewers' entries, whatever the batch's slice of the buffers
    cols = {f.name: c.to_numpy(zero_copy_only=False) for f, c in zip(struct.type, struct.flatten(), strict=True)}
    shape = (n, item_side["n_streamers"])
    indices = cols["s"].astype(np.int32)
    history = {
        name: sp.csr_matrix((cols[column].astype(dtype), indices, indptr), shape=shape)
        for name, column, dtype in (
            ("count", "count", np.float32),
            ("watch_time", "watch", np.float32),
            ("last_seen", "last", np.float64),
            ("recent", "recent", np.float32),
            ("decayed", "decayed", np.float32),
        )
    }
    als = AlternatingLeastSquares(factors=params.factors)
    factors = batch.column("features").flatten().to_numpy(zero_copy_only=False)
    als.user_factors = factors.astype(np.float32).reshape(n, params.factors)
    als.item_factors = item_side["item_factors"]
    model = _model(item_side, als, _placeholder_ids(n), _placeholder_ids(item_side["n_streamers"]), params, **history)
    build_lists(model)
    entry_offsets = pa.array(indptr.astype(np.int32))

    def per_entry(values: np.ndarray):
        return pa.ListArray.from_arrays(entry_offsets, pa.array(values))

    def per_viewer(values: np.ndarray):
        width = values.shape[1]
        return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), pa.array(values.ravel()))

    columns = {
        "u": batch.column("u"),
        "s": per_entry(indices),
        "count": per_entry(cols["count"].astype(np.float32)),
        "watch": per_entry(cols["watch"].astype(np.float32)),
        "last": per_entry(cols["last"].astype(np.float64)),
        "recent": per_entry(cols["recent"].astype(np.float32)),
        "decayed": per_entry(cols["decayed"].astype(np.float32)),
        "history_bonus": per_entry(model.history_bonus.astype(np.float32)),
        "live_bonus": per_entry(model.live_bonus.astype(np.float32)),
        "features": batch.column("features"),
        "best": pa.array(np.asarray(model.best_als, dtype=np.float32)),
    }
    for name in (RankerName.ALL, RankerName.NEW):
        ids, scores = model.lists[name]
        columns[f"{name}_ids"] = per_viewer(ids.astype(np.int32))
        columns[f"{name}_scores"] = per_viewer(scores.astype(np.float32))
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def _collect(ranked, n_users: int, n_pairs: int, factors: int) -> dict:
    """The executors' per-viewer rows as the model's arrays. `ranked` is computed once and kept
    on the executors; the driver takes it a slice of viewers at a time (about COLLECT_BYTES,
    under spark.driver.maxResultSize), so it holds the arrays plus one slice."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    per_viewer = 4 * factors + 2 * 8 * LIST_LENGTH + 16 + 36 * n_pairs / max(n_users, 1)
    step = max(1, int(COLLECT_BYTES // per_viewer))
    ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    out: dict[str, np.ndarray] = {
        "indptr": np.zeros(n_users + 1, dtype=np.int64),
        "indices": np.empty(n_pairs, dtype=np.int32),
        "count": np.empty(n_pairs, dtype=np.float32),
        "watch": np.empty(n_pairs, dtype=np.float32),
        "last": np.empty(n_pairs, dtype=np.float64),
        "recent": np.empty(n_pairs, dtype=np.float32),
        "decayed": np.empty(n_pairs, dtype=np.float32),
        "history_bonus": np.empty(n_pairs, dtype=np.float32),
        "live_bonus": np.empty(n_pairs, dtype=np.float32),
        "features": np.zeros((n_users, factors), dtype=np.float32),
        "best": np.zeros(n_users, dtype=np.float32),
    }
    at, largest = 0, 0
    for lo in range(0, n_users, step):
        hi = min(lo + step, n_users)
        table = _arrow(ranked.filter((F.col("u") >= lo) & (F.col("u") < hi))).sort_by("u")
        largest = max(largest, table.nbytes)
        u = table.column("u").to_numpy()
        if len(u) != hi - lo or (len(u) and (u[0] != lo or u[-1] != hi - 1)):
            raise RuntimeError(f"viewers {lo}..{hi}: {len(u)} ranked rows came back, not {hi - lo}")
        lengths = np.diff(table.column("s").combine_chunks().offsets.to_numpy())
        out["indptr"][lo + 1 : hi + 1] = at + np.cumsum(lengths)
        end = at + int(lengths.sum())
        for column, key in (
            ("s", "indices"),
            ("count", "count"),
            ("watch", "watch"),
            ("last", "last"),
            ("recent", "recent"),
            ("decayed", "decayed"),
            ("history_bonus", "history_bonus"),
            ("live_bonus", "live_bonus"),
        ):
            out[key][at:end] = table.column(column).combine_chunks().flatten().to_numpy()
        at = end
        out["features"][lo:hi] = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, factors)
        out["best"][lo:hi] = table.column("best").to_numpy()
        for name in ("all_ids", "all_scores", "new_ids", "new_scores"):
            values = table.column(name).combine_chunks()
            block = values.flatten().to_numpy().reshape(hi - lo, -1)
            if name not in out:
                out[name] = np.empty((n_users, block.shape[1]), dtype=block.dtype)
            out[name][lo:hi] = block
        del table
    ranked.unpersist()
    if at != n_pairs:
        raise RuntimeError(f"{at} pairs came back from the executors, not {n_pairs}")
    log.info(
        "driver: model arrays %.1f MB, collected in %s slice(s) of at most %.1f MB",
        sum(a.nbytes for a in out.values()) / 1e6,
        -(-n_users // step),
        largest / 1e6,
    )
    return out


class SparkEngine:
    """The recipe's steps (train/pipeline.py's `train_with`) on Spark: MLlib's ALS, aggregates on
    the executors, the rankers learned on the driver from a sample. MLlib cannot start from given
    factors, so the final ALS is a full fit rather than implicit's warm-started refresh."""

    def __init__(self, spark, slog: SparkLog, timer: Timer):
        self.spark = spark
        self.time_format = slog.time_format
        with timer("index"):
            self.indexed = _index(spark, slog)
        self.cut = 0
        self.past: DataFrame | None = None  # the sessions before the cut
        self.future: DataFrame | None = None  # and after it
        self.params = TrainParams()  # the validation fit's
        self.base: _Base | None = None  # the validation model's item side

    def time_range(self) -> tuple[int, int]:
        from pyspark.sql import functions as F

        span = self.indexed.sessions.agg(F.min(START), F.max(START)).first()
        assert span is not None, "an indexed log has rows"
        return int(span[0]), int(span[1])

    def split_at(self, cut: int) -> bool:
        from pyspark.sql import functions as F

        s = self.indexed.sessions
        past, future = s.filter(F.col(START) < cut), s.filter(F.col(START) >= cut)
        if past.isEmpty() or future.isEmpty():
            return False
        self.past, self.future, self.cut = past, future, cut
        return True

    def fit_validation(self, params: TrainParams, timer: Timer) -> None:
        self.params = params
        n_users, n_streamers = len(self.indexed.users), len(self.indexed.streamers)
        self.base = _fit_base(self.past, params, n_users, n_streamers, self.time_format, timer)

    def learn_rankers(self) -> dict[str, RankerWeights] | None:
        """Learned as the default engine learns them, on the driver: only RANKER_MAX_USERS viewers
        of the period are collected (their pairs, factors and next sessions) and the streamers live
        when their next session starts."""
        from pyspark.sql import functions as F

        assert self.base is not None and self.future is not None, "fit the validation model first"
        spark, indexed, params, base, future, cut = (
            self.spark,
            self.indexed,
            self.params,
            self.base,
            self.future,
            self.cut,
        )
        s = indexed.sessions
        n_streamers = len(indexed.streamers)
        # The validation model knows the streamers of the past only, as the default engine's does.
        known = np.flatnonzero(
            np.bincount(_arrow(base.pairs.select("s").distinct()).column(0).to_numpy(), minlength=n_streamers)
        )
        local = np.full(n_streamers, -1, dtype=np.int64)
        local[known] = np.arange(len(known))
        sample = (
            base.pairs.select("u")
            .distinct()
            .join(future.select("u").distinct(), "u")
            .orderBy(F.xxhash64("u", F.lit(params.random_state)))
            .limit(RANKER_MAX_USERS)
        )
        users = np.sort(_arrow(sample).column(0).to_numpy())
        if len(users) == 0:
            return None
        chosen = spark.createDataFrame(pa.table({"u": users.astype(np.int32)}))
        mine = _arrow(base.pairs.join(F.broadcast(chosen), "u"))
        vectors = _arrow(base.user_factors.join(F.broadcast(chosen), base.user_factors["id"] == chosen["u"]))
        nxt = _arrow(future.join(F.broadcast(chosen), "u"))
        log.info(
            "driver: ranker sample of %s viewers: %s pairs, %s next sessions, %.1f MB",
            f"{len(users):,}",
            f"{mine.num_rows:,}",
            f"{nxt.num_rows:,}",
            (mine.nbytes + nxt.nbytes + vectors.nbytes) / 1e6,
        )
        mine, nxt = mine.to_pandas(), nxt.to_pandas()
        row_of = np.searchsorted(users, mine["u"].to_numpy())
        history = csr_from_entries(
            len(users),
            len(known),
            row_of,
            local[mine["s"].to_numpy()],
            count=mine["count"].to_numpy(np.float32),
            watch_time=mine["watch"].to_numpy(np.float32),
            last_seen=mine["last"].to_numpy(np.float64),
            recent=mine["recent"].to_numpy(np.float32),
            decayed=mine["decayed"].to_numpy(np.float32),
        )
        als = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization, alpha=params.alpha)
        order = np.argsort(vectors.column("id").to_numpy())
        flat = vectors.column("features").combine_chunks().flatten().to_numpy()
        als.user_factors = np.ascontiguousarray(flat.reshape(len(users), params.factors)[order])
        als.item_factors = np.ascontiguousarray(base.als.item_factors[known])
        base_local = replace(
            base,
            als=als,
            popularity=base.popularity[known],
            popular_ranking=np.argsort(-base.popularity[known], kind="stable"),
            catalog=np.sort(local[base.catalog]),
        )
        user_ids = indexed.users.ids[users]
        streamer_names = indexed.streamers.ids[known]
        priors = RankerWeights.priors()
        side = base_local.item_side(priors)
        model = _model(side, als, IdMap.from_ids(user_ids), IdMap.from_ids(streamer_names), params, **history)
        future_frame = pd.DataFrame(
            {
                UID: np.asarray(user_ids, dtype=object)[np.searchsorted(users, nxt["u"].to_numpy())],
                STREAMER: indexed.streamers.ids[nxt["s"].to_numpy()],
                START: nxt[START].to_numpy(),
                END: nxt[END].to_numpy(),
            }
        )

        def live(steps: np.ndarray) -> dict[int, np.ndarray]:
            """The streamers live at each step (a session covers it), found on Spark."""
            steps = np.unique(steps)
            at = spark.createDataFrame(pa.table({"step": steps.astype(np.int64)}))
            covering = s.filter(F.col(END) >= cut).join(
                F.broadcast(at), (F.col(START) <= F.col("step")) & (F.col(END) >= F.col("step"))
            )
            table = _arrow(covering.select("step", "s").distinct())
            log.info(
                "driver: live sets at %s steps, %s (step, streamer) pairs, %.1f MB",
                len(steps),
                f"{table.num_rows:,}",
                table.nbytes / 1e6,
            )
            table = table.to_pandas()
            table["s"] = local[table["s"].to_numpy()]
            table = table[table["s"] >= 0]
            grouped = table.groupby("step")["s"].agg(lambda x: np.sort(x.to_numpy()))
            return {int(t): grouped.get(t, np.empty(0, dtype=np.int64)) for t in steps}

        rankers = learn_rankers(model, future_frame, max_users=len(users), live=live)
        base.pairs.unpersist()
        return rankers

    def fit_final(self, params: TrainParams, rankers: dict[str, RankerWeights], timer: Timer) -> Recommender:
        import scipy.sparse as sp

        indexed, time_format = self.indexed, self.time_format
        n_users, n_streamers = len(indexed.users), len(indexed.streamers)
        base = _fit_base(indexed.sessions, params, n_users, n_streamers, time_format, timer)
        n_pairs = base.pairs.count()
        item_side = base.item_side(rankers)
        with timer("lists"):
            ranked = _lists_on_executors(base.pairs, base.user_factors, item_side, params)
            arrays = _collect(ranked, n_users, n_pairs, params.factors)
        base.pairs.unpersist()
        shape = (n_users, n_streamers)

        def csr(v):
            return sp.csr_matrix((v, arrays["indices"], arrays["indptr"]), shape=shape)

        base.als.user_factors = arrays["features"]
        model = _model(
            item_side,
            base.als,
            indexed.users,
            indexed.streamers,
            params,
            count=csr(arrays["count"]),
            watch_time=csr(arrays["watch"]),
            last_seen=csr(arrays["last"]),
        )
        # The momentum counts, as the implicit engine keeps them: what an update needs.
        model.recent, model.decayed = csr(arrays["recent"]), csr(arrays["decayed"])
        model.lists = {
            RankerName.ALL: (arrays["all_ids"], arrays["all_scores"]),
            RankerName.NEW: (arrays["new_ids"], arrays["new_scores"]),
        }
        model.best_als = arrays["best"]
        model.history_bonus = arrays["history_bonus"]
        model.live_bonus = arrays["live_bonus"]
        return model


def train_spark(spark, slog: SparkLog, params: TrainParams, timer: Timer | None = None) -> Recommender:
    """The whole model on Spark, by the recipe the default engine runs (`train_with`)."""
    timer = timer or Timer()
    return train_with(SparkEngine(spark, slog, timer), params, timer)


def train_file(
    path: str | Path, params: TrainParams, master: str, timer: Timer | None = None
) -> tuple[Recommender, SparkLog]:
    """Read `path` on Spark and train; (model, the log's summary for the metadata)."""
    timer = timer or Timer()
    spark = spark_session(master)
    with timer("read"):
        log_ = read_log(spark, path)
    log.info(
        "%s: %s rows, %s layout, %s times; %s",
        path,
        f"{log_.rows_read:,}",
        log_.layout,
        log_.time_format,
        log_.drop_summary(),
    )
    model = train_spark(spark, log_, params, timer)
    log_.frame.unpersist()
    return model, log_


def trainer(master: str) -> Callable[[Sessions, TrainParams], Recommender]:
    """`training.train`'s signature on Spark, for the offline evaluation (its training period
    was read and split on this machine)."""

    def fit(sessions: Sessions, params: TrainParams) -> Recommender:
        spark = spark_session(master)
        log_ = log_from_sessions(spark, sessions)
        try:
            return train_spark(spark, log_, params)
        finally:
            log_.frame.unpersist()

    return fit

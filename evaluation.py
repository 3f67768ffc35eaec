"""Offline evaluation on a time split: the served ranking against plain ALS, POP and REP.

    python als_fit.py --evaluate                 # report, then train the model as usual
    python evaluation.py --data sessions.csv     # report only
    python evaluation.py --search                # the hyperparameter search behind the defaults

Protocol (DOMAIN.md): sessions starting in the last `test_fraction` of the time span are the test
period; everything is trained on the time before it, served ranker weights included (they are
learned on a validation period at the end of that training time). Test users are those seen
before the split and active after it. Their relevant streamers are those they watched in the
test period, split into
- all targets,
- repeat targets: streamers the user had already watched before the split,
- new targets: streamers the user had not watched, with watched streamers left out of every list.
Streamers first seen in the test period stay relevant (nobody can recommend them; all methods pay
the same).

Methods, on the same users: `served` (the ranking behind the API; `exclude_watched=true` for new
targets), `ALS` (implicit's recommend, already-watched items kept for all/repeat targets and
filtered for new ones), `POP` (the popularity the service falls back to), `REP` (the user's own
streamers by session count, then recency).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import metrics
from als_fit import TrainParams, fit_als, split_by_time, train
from interactions import aggregate
from recommender import Recommender
from sessions import STREAMER, UID, DataError, Sessions, read_sessions

log = logging.getLogger("evaluation")

K = 10
METRICS = {
    "MAP@10": metrics.map_at_k,
    "NDCG@10": metrics.ndcg_at_k,
    "recall@10": metrics.recall_at_k,
    "hit@10": metrics.hit_rate_at_k,
}
METHODS = ("served", "ALS", "POP", "REP")
TARGETS = ("all", "repeat", "new")


def targets_after(model: Recommender, test: pd.DataFrame) -> tuple[np.ndarray, list[set[int]]]:
    """(user rows, relevant streamer rows per user). Streamers unknown to the model get ids
    below zero: relevant, but no method can hit them."""
    rows = model.users.rows(test[UID])
    keep = rows >= 0
    names = test[STREAMER].to_numpy()[keep]
    cols = model.streamers.rows(names)
    unknown = cols < 0
    if unknown.any():
        codes, _ = pd.factorize(names[unknown])
        cols[unknown] = -1 - codes
    relevant: dict[int, set[int]] = {}
    for r, c in zip(rows[keep].tolist(), cols.tolist(), strict=True):
        relevant.setdefault(r, set()).add(c)
    users = np.array(sorted(relevant), dtype=np.int64)
    return users, [relevant[u] for u in users.tolist()]


def rep_lists(model: Recommender, users: np.ndarray, k: int = K) -> list[list[int]]:
    """REP: each user's own streamers by session count, ties broken by recency."""
    out = []
    for row in users.tolist():
        watched, entries = model.history(row)
        order = np.lexsort((-model.last_seen.data[entries], -model.count.data[entries]))
        out.append(watched[order][:k].tolist())
    return out


def als_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    with threadpool_limits(1, "blas"):
        ids, scores = model.als.recommend(users, model.count[users], N=k, filter_already_liked_items=exclude_watched)
    # implicit pads with filtered items scored -FLT_MAX when too few candidates remain
    return [row_ids[row_scores > -1e30].tolist() for row_ids, row_scores in zip(ids, scores, strict=True)]


def pop_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    head = model.popular_ranking[: k + 400]
    out = []
    for row in users.tolist():
        if exclude_watched:
            watched, _ = model.history(row)
            out.append(head[~np.isin(head, watched)][:k].tolist())
        else:
            out.append(head[:k].tolist())
    return out


def served_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    with threadpool_limits(1, "blas"):
        return [model.recommend(row, k, exclude_watched)[0].tolist() for row in users.tolist()]


def score_lists(actual: list[set[int]], predicted: dict[str, list[list[int]]]) -> dict[str, dict[str, float]]:
    results = {}
    for method, lists in predicted.items():
        try:
            results[method] = {name: f(actual, lists, K) for name, f in METRICS.items()}
        except ValueError:  # no user with a target of this kind
            results[method] = {name: float("nan") for name in METRICS}
    return results


def evaluate_model(model: Recommender, test: pd.DataFrame) -> dict:
    """Metrics per target kind and method for a model trained on the time before `test`."""
    users, relevant = targets_after(model, test)
    watched = [set(model.history(row)[0].tolist()) for row in users.tolist()]
    repeat = [r & w for r, w in zip(relevant, watched, strict=True)]
    new = [r - w for r, w in zip(relevant, watched, strict=True)]
    lists_all = {
        "served": served_lists(model, users, False),
        "ALS": als_lists(model, users, False),
        "POP": pop_lists(model, users, False),
        "REP": rep_lists(model, users),
    }
    lists_new = {
        "served": served_lists(model, users, True),
        "ALS": als_lists(model, users, True),
        "POP": pop_lists(model, users, True),
        "REP": [[] for _ in users.tolist()],  # REP has nothing new by definition
    }
    return {
        "users": {
            "all": len(users),
            "repeat": sum(1 for r in repeat if r),
            "new": sum(1 for n in new if n),
        },
        "results": {
            "all": score_lists(relevant, lists_all),
            "repeat": score_lists(repeat, lists_all),
            "new": score_lists(new, lists_new),
        },
        "coverage@10": {m: metrics.catalog_coverage(lists, model.n_streamers, K) for m, lists in lists_all.items()},
    }


def time_split(sessions: Sessions, test_fraction: float) -> tuple[Sessions, pd.DataFrame, int]:
    before, after, cut = split_by_time(sessions.frame, test_fraction)
    if before.empty or after.empty:
        raise DataError(f"{sessions.path}: the time split at {cut} leaves an empty train or test period")
    return replace(sessions, frame=before.reset_index(drop=True)), after, cut


def format_report(report: dict) -> str:
    s = report["split"]
    lines = [
        f"time split at {s['cut']} (last {s['test_fraction']:.0%} of the span): "
        f"{s['train_sessions']:,} sessions before, {s['test_sessions']:,} after; "
        f"{report['users']['all']:,} test users",
    ]
    for target in TARGETS:
        n = report["users"][target]
        title = {"all": "all targets", "repeat": "repeat targets", "new": "new targets (watched streamers left out)"}
        lines.append("")
        lines.append(f"{title[target]}, {n:,} users")
        lines.append(f"  {'method':<8}" + "".join(f"{m:>11}" for m in METRICS))
        for method in METHODS:
            row = report["results"][target][method]
            lines.append(f"  {method:<8}" + "".join(f"{row[m]:>11.4f}" for m in METRICS))
    cov = report["coverage@10"]
    lines.append("")
    lines.append("catalog coverage@10: " + ", ".join(f"{m} {v:.2%}" for m, v in cov.items()))
    return "\n".join(lines)


def run(sessions: Sessions, params: TrainParams, test_fraction: float, out: Path | None) -> dict:
    """Train on the time before the split, evaluate after it, print and save the report."""
    t0 = time.perf_counter()
    train_part, test, cut = time_split(sessions, test_fraction)
    model = train(train_part, params)
    report = evaluate_model(model, test)
    report["split"] = {
        "cut": cut,
        "test_fraction": test_fraction,
        "train_sessions": len(train_part.frame),
        "test_sessions": len(test),
        "source": sessions.path,
    }
    report["params"] = asdict(params)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    print(format_report(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, allow_nan=True))
        print(f"report: {out}")
    return report


# --- hyperparameter search ------------------------------------------------------------------


def search(sessions: Sessions, test_fraction: float) -> list[dict]:
    """The small grid behind the defaults, scored by plain ALS's NDCG@10 on new targets (ALS's
    job in the served ranking is discovery; the ranker handles repeats from raw history).

    Selection never sees the test period: ALS is fitted on the training time minus its last
    `test_fraction`, and scored on that last part. Steps, each keeping the best so far:
    strength at default ALS settings; factors x regularization x alpha; iterations."""
    train_part, _, _ = time_split(sessions, test_fraction)
    fit_part, valid, _ = time_split(train_part, test_fraction)
    inter = aggregate(fit_part.frame, fit_part.time_format)
    rows = inter.users.rows(valid[UID])
    cols = inter.streamers.rows(valid[STREAMER])
    keep = rows >= 0
    new_targets: dict[int, set[int]] = {}
    for r, c in zip(rows[keep].tolist(), cols[keep].tolist(), strict=True):
        if c < 0 or inter.count[r, c] == 0:  # never watched before: a new target
            new_targets.setdefault(r, set()).add(c if c >= 0 else -1 - len(new_targets))
    users = np.array(sorted(new_targets), dtype=np.int64)
    actual = [new_targets[u] for u in users.tolist()]
    results: list[dict] = []

    def trial(params: TrainParams) -> float:
        t0 = time.perf_counter()
        als = fit_als(inter.strength(params.strength), params)
        with threadpool_limits(1, "blas"):
            ids, _ = als.recommend(users, inter.count[users], N=K, filter_already_liked_items=True)
        score = metrics.ndcg_at_k(actual, ids.tolist(), K)
        seconds = time.perf_counter() - t0
        results.append({**asdict(params), "valid_new_ndcg@10": round(score, 4), "seconds": round(seconds, 2)})
        print(
            f"strength={params.strength:<15} factors={params.factors:<4} reg={params.regularization:<5} "
            f"alpha={params.alpha:<5} iterations={params.iterations:<3} NDCG@10 new {score:.4f}  ({seconds:.1f}s)"
        )
        return score

    print(f"validation: {len(fit_part.frame):,} sessions to fit, {len(users):,} users with new targets after")
    strengths = ("sessions", "log_sessions", "watch_time", "log_watch_time", "binary")
    best = max((replace(TrainParams(), strength=s) for s in strengths), key=trial)
    grid = [
        replace(best, factors=f, regularization=r, alpha=a)
        for f in (32, 64, 128)
        for r in (0.01, 0.1, 1.0)
        for a in (1.0, 10.0, 40.0)
    ]
    best = max(grid, key=trial)
    best = max((replace(best, iterations=i) for i in (5, 15, 30)), key=trial)
    print(f"best: {best}")
    return results


def main(argv: list[str] | None = None) -> int:
    from als_fit import build_parser, params_from_args, resolve_data
    from settings import get_settings

    settings = get_settings()
    parser = build_parser(settings)
    parser.description = "Evaluate the served ranking against ALS, POP and REP on a time split."
    parser.add_argument("--test-fraction", type=float, default=0.1, help="last share of the time span held out")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path (default: beside the model)")
    parser.add_argument("--search", action="store_true", help="run the hyperparameter search instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        params = params_from_args(args)
        if not 0 < args.test_fraction < 1:
            raise ValueError(f"--test-fraction must be in (0, 1); got {args.test_fraction}")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        path, _ = resolve_data(args.data, settings)
        sessions = read_sessions(path)
        if args.search:
            rows = search(sessions, args.test_fraction)
            out = args.out or Path(args.model).with_suffix(".search.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=2))
            print(f"search results: {out}")
        else:
            run(sessions, params, args.test_fraction, args.out or Path(args.model).with_suffix(".evaluation.json"))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

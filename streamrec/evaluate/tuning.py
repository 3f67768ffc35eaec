"""The small hyperparameter search behind the trainer's ALS defaults.

    python -m streamrec.evaluate.tuning                       # on the demo sessions
    python -m streamrec.evaluate.tuning --data sessions.csv   # on yours; writes the trials as JSON beside the model

ALS's job in the served ranking is discovery (repeats come from the viewer's raw history), so
each configuration is scored by plain ALS's NDCG@10 on new targets. Selection never sees the
test period that `streamrec-evaluate` reports on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import aggregate
from streamrec.data.sessions import STREAMER, UID, DataError, Sessions, read_sessions
from streamrec.evaluate import metrics
from streamrec.evaluate.offline import K, time_split
from streamrec.train.pipeline import TrainParams, add_io_args, fit_als


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
    from streamrec.data import demo as demo_data
    from streamrec.logs import configure_logging
    from streamrec.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        description="Search ALS hyperparameters on a validation period.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_io_args(parser, settings, "where the trials go: beside this model path (no model is written)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="last share of the time span held out")
    parser.add_argument("--out", type=Path, default=None, help="JSON trials path (default: beside the model)")
    args = parser.parse_args(argv)
    configure_logging("WARNING", settings.log_format)
    try:
        path, _ = demo_data.resolve(args.data, settings.demo_data_path)
        rows = search(read_sessions(path), args.test_fraction)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path(args.model).with_suffix(".search.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"search results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

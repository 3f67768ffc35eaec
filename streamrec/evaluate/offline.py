"""Offline evaluation on a time split: the served ranking against plain ALS, POP and REP.

    python als_fit.py --evaluate                 # report, then train the model as usual
    python evaluation.py --data sessions.csv     # report only
    python evaluation.py --protocol live         # the RecSys 2021 live protocol
    python evaluation.py --replay                # the test period streamed as events (evaluate/replay.py)

Protocol (a temporal split, as the live-streaming literature uses: a random split would put a
viewer's future sessions in training): sessions starting in the last `test_fraction` of the time span are the test
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
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from streamrec.data.sessions import START, STREAMER, UID, DataError, Sessions
from streamrec.evaluate import metrics
from streamrec.model.popular import most_popular
from streamrec.model.ranking import top_n
from streamrec.model.recommender import Recommender
from streamrec.model.scoring import rank
from streamrec.train import pipeline as training
from streamrec.train.pipeline import TrainParams, split_by_time, train

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


def rep_list(model: Recommender, row: int, among: np.ndarray | None = None, k: int = K) -> list[int]:
    """REP: the user's own streamers (those in `among`, if given) by session count, ties broken
    by recency."""
    watched, entries = model.history(row)
    count, last = model.count.data[entries], model.last_seen.data[entries]
    if among is not None:
        on = np.isin(watched, among)
        watched, count, last = watched[on], count[on], last[on]
    return watched[np.lexsort((-last, -count))][:k].tolist()


def rep_lists(model: Recommender, users: np.ndarray, k: int = K) -> list[list[int]]:
    return [rep_list(model, row, k=k) for row in users.tolist()]


def als_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    with threadpool_limits(1, "blas"):
        ids, scores = model.als.recommend(users, model.count[users], N=k, filter_already_liked_items=exclude_watched)
    # implicit pads with filtered items scored -FLT_MAX when too few candidates remain
    return [row_ids[row_scores > -1e30].tolist() for row_ids, row_scores in zip(ids, scores, strict=True)]


def pop_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    if not exclude_watched:
        return [most_popular(model.popular_ranking, model.popularity, k)[0].tolist()] * len(users)
    return [
        most_popular(model.popular_ranking, model.popularity, k, model.history(row)[0])[0].tolist()
        for row in users.tolist()
    ]


def served_lists(model: Recommender, users: np.ndarray, exclude_watched: bool, k: int = K) -> list[list[int]]:
    with threadpool_limits(1, "blas"):
        return [rank(model, row, k, exclude_watched)[0].tolist() for row in users.tolist()]


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
    lists_all: dict[str, list[list[int]]] = {
        "served": served_lists(model, users, False),
        "ALS": als_lists(model, users, False),
        "POP": pop_lists(model, users, False),
        "REP": rep_lists(model, users),
    }
    lists_new: dict[str, list[list[int]]] = {
        "served": served_lists(model, users, True),
        "ALS": als_lists(model, users, True),
        "POP": pop_lists(model, users, True),
        "REP": [[] for _ in users.tolist()],  # REP has nothing new by definition
    }
    per_user = {
        "all": per_user_values(relevant, lists_all, metrics.ndcg_per_user),
        "repeat": per_user_values(repeat, lists_all, metrics.ndcg_per_user),
        "new": per_user_values(new, lists_new, metrics.ndcg_per_user),
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
        **intervals(
            {"NDCG@10": per_user},
            "NDCG@10",
            [("served", "REP", "all", "NDCG@10"), ("served", "ALS", "new", "NDCG@10")],
        ),
    }


def per_user_values(actual: list[set[int]], lists: dict[str, list[list[int]]], f) -> dict[str, np.ndarray]:
    """f's per-user values (users with something relevant, in order) of every method."""
    if not any(actual):
        return {m: np.empty(0) for m in lists}
    return {m: f(actual, ls, K) for m, ls in lists.items()}


def intervals(
    per_user: dict[str, dict[str, dict[str, np.ndarray]]], plotted: str, pairs: list[tuple[str, str, str, str]]
) -> dict:
    """Bootstrap 95% intervals over test users, from per-user values `per_user[metric][target]
    [method]`: of every method's `plotted` metric per target kind, and paired ones for each
    (a, b, target, metric) of `pairs`."""
    by_method = {
        target: {m: metrics.mean_interval(v) for m, v in values.items()} for target, values in per_user[plotted].items()
    }
    paired = []
    for a, b, target, metric in pairs:
        values = per_user[metric][target]
        if len(values[a]) == 0:
            continue
        paired.append(
            {"a": a, "b": b, "target": target, "metric": metric, **metrics.paired_bootstrap(values[a], values[b])}
        )
    return {"intervals": {"metric": plotted, "by_method": by_method, "paired": paired}}


def time_split(sessions: Sessions, test_fraction: float) -> tuple[Sessions, pd.DataFrame, int]:
    before, after, cut = split_by_time(sessions.frame, test_fraction)
    if before.empty or after.empty:
        raise DataError(f"{sessions.path}: the time split at {cut} leaves an empty train or test period")
    return replace(sessions, frame=before.reset_index(drop=True)), after, cut


def _tables(report: dict, columns, titles: dict[str, str]) -> list[str]:
    """One table per target kind: a row per method, a column per metric."""
    lines = []
    for target in TARGETS:
        lines.append("")
        lines.append(f"{titles[target]}, {report['users'][target]:,} users")
        lines.append(f"  {'method':<8}" + "".join(f"{m:>11}" for m in columns))
        for method in METHODS:
            row = report["results"][target][method]
            lines.append(f"  {method:<8}" + "".join(f"{row[m]:>11.4f}" for m in columns))
    return lines


def format_report(report: dict) -> str:
    s = report["split"]
    lines = [
        f"time split at {s['cut']} (last {s['test_fraction']:.0%} of the span): "
        f"{s['train_sessions']:,} sessions before, {s['test_sessions']:,} after; "
        f"{report['users']['all']:,} test users",
    ]
    titles = {"all": "all targets", "repeat": "repeat targets", "new": "new targets (watched streamers left out)"}
    lines += _tables(report, METRICS, titles)
    cov = report["coverage@10"]
    lines.append("")
    lines.append("catalog coverage@10: " + ", ".join(f"{m} {v:.2%}" for m, v in cov.items()))
    lines += _interval_lines(report)
    return "\n".join(lines)


def _interval_lines(report: dict) -> list[str]:
    paired = report.get("intervals", {}).get("paired", [])
    if not paired:
        return []
    lines = ["", "paired bootstrap over test users, 95% intervals:"]
    for p in paired:
        lines.append(
            f"  {p['a']} - {p['b']}, {p['target']} targets, {p['metric']}: {p['difference']:+.4f} "
            f"[{p['difference_low']:+.4f}, {p['difference_high']:+.4f}]; ratio {p['ratio']:.3f}x "
            f"[{p['ratio_low']:.3f}x, {p['ratio_high']:.3f}x], {p['users']:,} users"
        )
    return lines


PROTOCOLS = ("time", "live", "replay")


def run(
    sessions: Sessions,
    params: TrainParams,
    test_fraction: float,
    out: Path | None,
    protocol: str = "time",
    plot: Path | None = None,
    fit: Callable[[Sessions, TrainParams], Recommender] = train,
    replay_targets: int = 50_000,
    replay_strangers: float = 0.05,
) -> dict:
    """Train on the time before the split (by `fit`: the default engine's `training.train`, or
    another engine's), evaluate after it, print and save the report."""
    from streamrec.evaluate.replay import evaluate_replay, format_replay_report

    t0 = time.perf_counter()
    train_part, test, cut = time_split(sessions, test_fraction)
    strangers = 0
    if protocol == "replay" and replay_strangers > 0:
        # viewers the model does not know: a share of the test period's, their earlier sessions dropped
        active = pd.unique(test[UID].astype(str))
        picked = np.random.default_rng(0).choice(active, int(len(active) * replay_strangers), replace=False)
        frame = train_part.frame
        train_part = replace(train_part, frame=frame[~frame[UID].astype(str).isin(set(picked))].reset_index(drop=True))
        strangers = len(picked)
    model = fit(train_part, params)
    if protocol == "live":
        report = evaluate_live(model, sessions.frame, test)
    elif protocol == "replay":
        report = evaluate_replay(model, test, replay_targets)
        report["strangers"] = strangers
    else:
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
    formats = {"live": format_live_report, "replay": format_replay_report}
    print(formats.get(protocol, format_report)(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, allow_nan=True))
        print(f"report: {out}")
    if plot is not None:
        plot_report(report, plot)
        print(f"plot: {plot}")
    return report


def plot_report(report: dict, path: Path) -> None:
    """NDCG@10 of every method for all, repeat and new targets, with 95% bootstrap intervals,
    as a grouped bar chart in `path` (PNG); the paired comparisons are written below it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise DataError("--plot needs matplotlib: pip install -r requirements-eval.txt") from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    iv = report["intervals"]
    methods, targets = report.get("methods", METHODS), report.get("targets", TARGETS)
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    width = 0.8 / len(methods)
    colours = {
        "served": "#1f77b4",
        "ALS": "#ff7f0e",
        "POP": "#7f7f7f",
        "REP": "#2ca02c",
        "with events": "#1f77b4",
        "frozen": "#7f7f7f",
    }
    for j, method in enumerate(methods):
        values, low, high = [], [], []
        for target in targets:
            v = report["results"][target][method][iv["metric"]]
            lo, hi = iv["by_method"][target].get(method, (float("nan"), float("nan")))
            values.append(v)
            low.append(max(0.0, v - lo) if np.isfinite(lo) else 0.0)
            high.append(max(0.0, hi - v) if np.isfinite(hi) else 0.0)
        x = np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(x, values, width, yerr=[low, high], capsize=3, label=method, color=colours.get(method))
        for xi, v in zip(x, values, strict=True):
            if np.isfinite(v):
                ax.text(xi, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    users = report["users"]
    replay = report.get("protocol") == "replay"
    labels = [f"{t}\n{users[t]:,} targets" if replay else f"{t} targets\n{users[t]:,} users" for t in targets]
    ax.set_xticks(np.arange(len(targets)), labels)
    ax.set_ylabel(f"{iv['metric']} (95% bootstrap interval)")
    protocol = {"live": "live protocol", "replay": "replay of the test period as events"}.get(
        report.get("protocol", ""), "time split"
    )
    ax.set_title(f"{protocol}: {Path(str(report['split']['source'])).name}", fontsize=10)
    ax.legend(ncols=len(methods), fontsize=8, loc="upper right")
    top = np.nanmax([report["results"][t][m][iv["metric"]] for t in targets for m in methods] + [0.05])
    ax.set_ylim(0, min(1.05, 1.2 * top))
    notes = [
        f"{q['a']} / {q['b']}, {q['target']}, {q['metric']}: "
        f"{q['ratio']:.3f}x [{q['ratio_low']:.3f}, {q['ratio_high']:.3f}]"
        for q in iv["paired"]
        if report.get("protocol") != "replay" or (q["metric"] == iv["metric"] and q["target"] != "new")
    ]
    fig.text(0.01, 0.01, "paired 95%: " + ";  ".join(notes), fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --- the live protocol (RecSys 2021): rank only what is live when the viewer next watches ------

LIVE_METRICS = {
    "hit@1": lambda a, p: metrics.hit_rate_at_k(a, p, 1),
    "hit@5": lambda a, p: metrics.hit_rate_at_k(a, p, 5),
    "hit@10": lambda a, p: metrics.hit_rate_at_k(a, p, 10),
    "NDCG@10": lambda a, p: metrics.ndcg_at_k(a, p, 10),
}


def evaluate_live(model: Recommender, frame: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Each test user's first session after the split is the target; every method ranks only the
    streamers live at its start step (live: some session in `frame`, all the data, covers it)."""
    rows = model.users.rows(test[UID])
    known = test[rows >= 0].assign(_row=rows[rows >= 0])
    first = known.sort_values([START], kind="stable").drop_duplicates("_row")
    users = first["_row"].to_numpy()
    targets = model.streamers.rows(first[STREAMER])
    steps = first[START].to_numpy()
    live = training.live_at(model.streamers, frame, steps)
    pop_rank = np.empty(model.n_streamers, dtype=np.int64)
    pop_rank[model.popular_ranking] = np.arange(model.n_streamers)
    lists: dict[str, list[list[int]]] = {m: [] for m in METHODS}
    repeat = np.zeros(len(users), dtype=bool)
    sizes = []
    with threadpool_limits(1, "blas"):
        for j, (row, step) in enumerate(zip(users.tolist(), steps.tolist(), strict=True)):
            cands = live[step]
            sizes.append(len(cands))
            repeat[j] = targets[j] in set(model.history(row)[0].tolist())
            lists["served"].append(rank(model, row, K, among=model.candidates(cands), live=True)[0].tolist())
            als = model.als.item_factors[cands] @ model.als.user_factors[row]
            lists["ALS"].append(cands[top_n(als, K)].tolist())
            lists["POP"].append(cands[np.argsort(pop_rank[cands], kind="stable")[:K]].tolist())
            lists["REP"].append(rep_list(model, row, among=cands))
    # a target the model never saw is relevant but unreachable: id -1 is never ranked
    actual = [{int(t)} for t in targets]
    results, counts, ndcg, hit1 = {}, {}, {}, {}
    for target, mask in (("all", np.ones(len(users), bool)), ("repeat", repeat), ("new", ~repeat)):
        counts[target] = int(mask.sum())
        picked = [a for a, m in zip(actual, mask, strict=True) if m]
        chosen = {method: [p for p, m in zip(ls, mask, strict=True) if m] for method, ls in lists.items()}
        results[target] = {
            method: {name: (f(picked, ls) if picked else float("nan")) for name, f in LIVE_METRICS.items()}
            for method, ls in chosen.items()
        }
        ndcg[target] = per_user_values(picked, chosen, metrics.ndcg_per_user)
        hit1[target] = per_user_values(picked, chosen, lambda a, p, _k: metrics.hit_per_user(a, p, 1))
    return {
        "protocol": "live",
        "users": counts,
        "results": results,
        "live_candidates": {
            "mean": float(np.mean(sizes)) if sizes else 0.0,
            "median": float(np.median(sizes)) if sizes else 0.0,
        },
        **intervals(
            {"NDCG@10": ndcg, "hit@1": hit1},
            "NDCG@10",
            [
                ("served", "REP", "all", "NDCG@10"),
                ("served", "REP", "repeat", "hit@1"),
                ("served", "ALS", "new", "NDCG@10"),
            ],
        ),
    }


def format_live_report(report: dict) -> str:
    s = report["split"]
    lines = [
        f"live protocol, split at {s['cut']}: each test user's first session after it is the target, "
        f"ranked among the streamers live at its start (median {report['live_candidates']['median']:.0f}, "
        f"mean {report['live_candidates']['mean']:.0f} live); {report['users']['all']:,} test users",
    ]
    lines += _tables(report, LIVE_METRICS, {t: f"{t} targets" for t in TARGETS})
    lines += _interval_lines(report)
    return "\n".join(lines)


def add_evaluation_args(parser) -> None:
    parser.add_argument("--test-fraction", type=float, default=0.1, help="last share of the time span held out")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="time",
        help="time: all test-period targets; live: next session among live; replay: the test period streamed "
        "as events, each session predicted with what was known just before it, frozen model against with-events",
    )
    parser.add_argument("--replay", action="store_const", const="replay", dest="protocol", help="--protocol replay")
    parser.add_argument(
        "--replay-targets", type=int, default=50_000, help="replay: test sessions predicted (all are streamed)"
    )
    parser.add_argument(
        "--replay-strangers",
        type=float,
        default=0.05,
        help="replay: share of the test period's viewers whose earlier sessions are left out of training, so "
        "that the model does not know them (their targets from the second session on are 'unknown viewer')",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="also draw NDCG@10 per method and target, with intervals (PNG)"
    )


def run_from_args(args, sessions: Sessions, params: TrainParams, out: Path | None, fit: Callable | None = None) -> dict:
    """`run` with what `add_evaluation_args` put on `args` (the commands' one call)."""
    return run(
        sessions,
        params,
        args.test_fraction,
        out,
        args.protocol,
        args.plot,
        fit=fit or train,
        replay_targets=args.replay_targets,
        replay_strangers=args.replay_strangers,
    )


def check_evaluation_args(args) -> None:
    if args.replay_targets < 1:
        raise ValueError(f"--replay-targets must be at least 1; got {args.replay_targets}")
    if not 0 <= args.replay_strangers < 1:
        raise ValueError(f"--replay-strangers must be in [0, 1); got {args.replay_strangers}")
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must be in (0, 1); got {args.test_fraction}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ValueError(f"--plot writes a PNG: give a path ending in .png; got {args.plot}")
    if args.plot is not None:
        try:  # said before the evaluation runs, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError(
                "--plot needs matplotlib: pip install -r requirements-eval.txt (or 'streamrec[eval]')"
            ) from None


def report_path(model: str | Path, protocol: str) -> Path:
    suffix = ".evaluation.json" if protocol == "time" else f".evaluation-{protocol}.json"
    return Path(model).with_suffix(suffix)

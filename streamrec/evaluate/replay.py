"""The replay protocol: what the event API is worth. The test period's sessions are streamed in
time order through the code that serves `POST /events` (`Held`, the worker's sessions per viewer,
and `ServedModel.recommend`), and each session is predicted with what was known just before it
(the sessions that had ended by its start), against the same frozen model without them.

    python evaluation.py --protocol replay        # or --replay

Every test session (a sample of --replay-targets of them, all of them still streamed) is a target
with one relevant streamer: its default list (k = 10) is scored by NDCG@10 and HR@1. Targets are
split by what was known just before them: `repeat` (the viewer had watched the streamer: before
the model's cutoff, or after it), `new` (never), `after cutoff` (watched before, but only after
the cutoff: only the events can know it), and `unknown viewer` (a viewer the model does not know,
from their second session on: the frozen model can only give them the popular list). So that there
are such viewers, `--replay-strangers` (5%) of the test period's viewers are left out of training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.data.sessions import END, START, STREAMER, UID
from streamrec.evaluate import metrics
from streamrec.events.held import Held
from streamrec.events.log import Chunk
from streamrec.model.recommender import Recommender

K = 10
REPLAY_METHODS = ("with events", "frozen")
REPLAY_TARGETS = ("all", "repeat", "new", "after cutoff", "unknown viewer")
REPLAY_METRICS = ("NDCG@10", "hit@1")


def evaluate_replay(model: Recommender, test: pd.DataFrame, targets: int = 50_000, seed: int = 0) -> dict:
    """Replay `test` (the sessions after the split, in the model's time units) against `model`."""
    from streamrec.serve.serving import ServedModel  # the serving code itself

    served = ServedModel(model)
    test = test.reset_index(drop=True)
    uids = test[UID].astype(str).to_numpy()
    names = test[STREAMER].astype(str).to_numpy()
    starts, ends = test[START].to_numpy(np.int64), test[END].to_numpy(np.int64)
    by_start = np.argsort(starts, kind="stable")
    by_end = np.argsort(ends, kind="stable")
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(test), dtype=bool)
    chosen[rng.choice(len(test), size=min(targets, len(test)), replace=False)] = True
    held = Held(per_viewer=50, max_viewers=10_000_000, hold_seconds=float("inf"))
    known = lambda name: model.streamers.get(name) is not None  # noqa: E731 - as the worker does
    seen_after: dict[str, set[str]] = {}  # streamers each viewer watched after the cutoff, known so far
    kinds: dict[str, list[bool]] = {t: [] for t in REPLAY_TARGETS}
    ndcg: dict[str, list[float]] = {m: [] for m in REPLAY_METHODS}
    hit1: dict[str, list[float]] = {m: [] for m in REPLAY_METHODS}
    fed = 0
    for i in by_start.tolist():
        # every session that ended by this one's start is an event the service has had
        while fed < len(by_end) and ends[by_end[fed]] <= starts[i]:
            j = int(by_end[fed])
            held.take(Chunk([(fed, (uids[j], names[j], int(starts[j]), int(ends[j])))], position=fed), known)
            seen_after.setdefault(uids[j], set()).add(names[j])
            fed += 1
        if not chosen[i]:
            continue
        uid, target = uids[i], names[i]
        row = model.users.get(uid)
        before = (
            row is not None
            and (target_row := model.streamers.get(target)) is not None
            and (target_row in set(model.history(row)[0].tolist()))
        )
        after = target in seen_after.get(uid, ())
        kinds["all"].append(True)
        kinds["repeat"].append(before or after)
        kinds["new"].append(not (before or after))
        kinds["after cutoff"].append(after and not before)
        kinds["unknown viewer"].append(row is None and uid in seen_after)
        target_row = model.streamers.get(target)
        for method in REPLAY_METHODS:
            sessions = held.sessions(uid) if method == "with events" else None
            _, rows, _ = served.recommend(uid, K, False, held=sessions, newest=held.newest_time or 0)
            listed = rows.tolist()
            rank = listed.index(target_row) if target_row is not None and target_row in listed else -1
            ndcg[method].append(1.0 / np.log2(rank + 2) if rank >= 0 else 0.0)
            hit1[method].append(1.0 if rank == 0 else 0.0)
    results, counts, paired = {}, {}, []
    for kind in REPLAY_TARGETS:
        mask = np.asarray(kinds[kind], dtype=bool)
        counts[kind] = int(mask.sum())
        results[kind] = {
            m: {
                "NDCG@10": float(np.mean(np.asarray(ndcg[m])[mask])) if mask.any() else float("nan"),
                "hit@1": float(np.mean(np.asarray(hit1[m])[mask])) if mask.any() else float("nan"),
            }
            for m in REPLAY_METHODS
        }
        if mask.any():
            for name, values in (("NDCG@10", ndcg), ("hit@1", hit1)):
                a, b = np.asarray(values["with events"])[mask], np.asarray(values["frozen"])[mask]
                paired.append(
                    {
                        "a": "with events",
                        "b": "frozen",
                        "target": kind,
                        "metric": name,
                        **metrics.paired_bootstrap(a, b),
                    }
                )
    by_method = {
        kind: {
            m: metrics.mean_interval(np.asarray(ndcg[m])[np.asarray(kinds[kind], dtype=bool)]) for m in REPLAY_METHODS
        }
        for kind in REPLAY_TARGETS
    }
    return {
        "protocol": "replay",
        "methods": list(REPLAY_METHODS),
        "targets": list(REPLAY_TARGETS),
        "users": counts,
        "results": results,
        "streamed_sessions": int(len(test)),
        "intervals": {"metric": "NDCG@10", "by_method": by_method, "paired": paired},
    }


def format_replay_report(report: dict) -> str:
    s = report["split"]
    lines = [
        f"replay protocol, split at {s['cut']}: {report['streamed_sessions']:,} test sessions streamed in time "
        f"order as events; {report['users']['all']:,} of them predicted with what was known just before each; "
        f"{report.get('strangers', 0):,} of the period's viewers left out of training (unknown viewers)",
        f"{'targets':<16}{'n':>8}" + "".join(f"{m + ' ' + x:>24}" for m in REPLAY_METHODS for x in REPLAY_METRICS),
    ]
    for kind in REPLAY_TARGETS:
        values = "".join(f"{report['results'][kind][m][x]:>24.4f}" for m in REPLAY_METHODS for x in REPLAY_METRICS)
        lines.append(f"{kind:<16}{report['users'][kind]:>8,}{values}")
    lines.append("paired 95% (with events / frozen):")
    for q in report["intervals"]["paired"]:
        lines.append(
            f"  {q['target']:<16}{q['metric']:<8} {q['ratio']:.3f}x [{q['ratio_low']:.3f}, {q['ratio_high']:.3f}], "
            f"difference {q['difference']:+.4f} [{q['difference_low']:+.4f}, {q['difference_high']:+.4f}]"
        )
    return "\n".join(lines)

"""An update with one day of sessions against a full retrain on the same sessions.

    python bench/update_bench.py                     # the calibrated 100k log (bench/out/twitch100k.csv)
    python bench/update_bench.py --sweeps 1 2 --full  # also 1.1.0's update, ALS swept over everyone
    python bench/update_bench.py --users 1000000 --chain 0 --repeat 1 --skip-ndcg

The log's last 10% of time is held out (the days after, as `als_fit.py --evaluate` holds them
out). Of the time before it, the last day is the "new" day: a model is trained in full on the
time before that day, then updated with the day (`update.update`, incremental, and with --full
also sweeping ALS over everyone), and a full retrain runs on the time before the held-out days
(the same sessions), alternating for --repeat rounds. Reported, all in this one process and run:
the full retrain's time, each update's time (merge, ALS, popularity and catalog, history terms,
lists; reading excluded on both sides, writing the file reported apart) and their ratio (goal:
at most 0.10 at 100k viewers, 0.15 at 1M), and the served NDCG@10 on all, repeat and new targets
of the days after, update against retrain (goal: within 1%). Then `--chain` days updated one at
a time, from a model trained that many days earlier, against the same retrain: how far updates
drift before a retrain is due.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.train_bench import ensure_data  # noqa: E402
from streamrec.data.sessions import START, read_sessions  # noqa: E402
from streamrec.evaluate.offline import evaluate_model, time_split  # noqa: E402
from streamrec.model.model_file import save_model  # noqa: E402
from streamrec.progress import Timer  # noqa: E402
from streamrec.train.pipeline import TrainParams, train  # noqa: E402
from streamrec.train.update import UPDATE_SWEEPS, update  # noqa: E402

DAY = 144  # 10-minute steps of the Twitch log


def served_ndcg(model, test) -> dict[str, float]:
    report = evaluate_model(model, test)
    return {t: round(report["results"][t]["served"]["NDCG@10"], 4) for t in ("all", "repeat", "new")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="viewers of the benchmark log")
    parser.add_argument("--sweeps", type=int, nargs="+", default=[UPDATE_SWEEPS], help="ALS sweeps of the update")
    parser.add_argument("--day", type=int, default=DAY, help="time steps in one day of the log")
    parser.add_argument("--chain", type=int, default=7, help="also this many daily updates in a row (0: none)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of retrain and updates, alternating")
    parser.add_argument("--full", action="store_true", help="also the update that sweeps ALS over everyone (1.1.0's)")
    parser.add_argument("--skip-ndcg", action="store_true", help="times only (the evaluation takes long at 1M)")
    args = parser.parse_args(argv)

    sessions = read_sessions(ensure_data(args.users))
    before_test, test, cut = time_split(sessions, 0.1)
    start = before_test.frame[START].to_numpy()
    base = replace(before_test, frame=before_test.frame[start < cut - args.day].reset_index(drop=True))
    day = replace(before_test, frame=before_test.frame[start >= cut - args.day].reset_index(drop=True))
    print(
        f"{sessions.path}: {len(base.frame):,} sessions before the new day, {len(day.frame):,} in it, "
        f"{len(test):,} in the days after (from step {cut})"
    )
    params = TrainParams()
    results: dict = {"retrain_s": [], "updates": {}}
    previous = train(base, params)
    modes = [("incremental", s) for s in args.sweeps] + ([("full sweeps", s) for s in args.sweeps] if args.full else [])
    # Alternating, `repeat` rounds: a retrain, then each update, so that the machine's drift falls on both.
    for round_ in range(args.repeat):
        t = time.perf_counter()
        retrained = train(before_test, params)
        results["retrain_s"].append(round(time.perf_counter() - t, 2))
        if round_ == 0 and not args.skip_ndcg:
            results["retrain_ndcg"] = served_ndcg(retrained, test)
            print(f"full retrain: served NDCG@10 {results['retrain_ndcg']}")
        del retrained
        print(f"full retrain, round {round_ + 1}: {results['retrain_s'][-1]:.1f} s")
        for mode, sweeps in modes:
            timer = Timer()
            t = time.perf_counter()
            updated, skipped = update(previous, day, sweeps, timer, incremental=mode == "incremental")
            seconds = time.perf_counter() - t
            with tempfile.TemporaryDirectory() as folder:
                t = time.perf_counter()
                save_model(updated, Path(folder) / "model.pkl")
                save_s = time.perf_counter() - t
            entry = results["updates"].setdefault(f"{mode}, {sweeps} sweep(s)", {"seconds": [], "save_s": []})
            entry["seconds"].append(round(seconds, 2))
            entry["save_s"].append(round(save_s, 2))
            entry["steps"] = ", ".join(f"{k} {v:.2f}s" for k, v in timer.steps.items())
            if round_ == 0 and not args.skip_ndcg:
                ndcg = served_ndcg(updated, test)
                entry["ndcg"] = ndcg
                entry["ndcg_vs_retrain"] = {k: round(ndcg[k] / results["retrain_ndcg"][k], 4) for k in ndcg}
                entry["skipped"] = skipped
            print(
                f"update ({mode}, {sweeps} sweep(s)), round {round_ + 1}: {seconds:.2f} s = "
                f"{seconds / results['retrain_s'][-1]:.3f}x the retrain of this round (goal <= 0.10 at 100k, "
                f"0.15 at 1M; {entry['steps']}); writing the file {save_s:.2f} s; served NDCG@10 "
                f"{entry.get('ndcg_vs_retrain')} of the retrain's (goal >= 0.99)"
            )
            del updated
    if args.chain > 1:  # a day at a time, `chain` days, from a model that much older
        model = train(replace(before_test, frame=before_test.frame[start < cut - args.chain * args.day]), params)
        times = []
        for i in range(args.chain, 0, -1):
            lo, hi = cut - i * args.day, cut - (i - 1) * args.day
            one_day = replace(before_test, frame=before_test.frame[(start >= lo) & (start < hi)].reset_index(drop=True))
            t = time.perf_counter()
            model, _ = update(model, one_day, args.sweeps[0])  # incremental
            times.append(round(time.perf_counter() - t, 2))
        ndcg = served_ndcg(model, test)
        ratio = {k: round(ndcg[k] / results["retrain_ndcg"][k], 4) for k in ndcg}
        results["chain"] = {"days": args.chain, "seconds": times, "ndcg": ndcg, "ndcg_vs_retrain": ratio}
        print(f"{args.chain} daily updates in a row ({times} s): served NDCG@10 {ndcg}, {ratio} of the retrain's")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

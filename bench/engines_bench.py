"""The two training engines on one log, in one run: time, memory and served quality.

    python bench/engines_bench.py                    # the 100k log (bench/out/twitch100k.csv)
    python bench/engines_bench.py --users 1000000 --iterations 3 --no-evaluate

Each engine trains `als_fit.py --evaluate` in its own process (the evaluation's fit on the
training period, then the model on the whole log), one after the other. Reported per engine:
the wall time of the whole command, the final training's steps (its summary line), what the
Spark driver collected (its `driver:` log lines), the peak
resident memory of the whole process tree (Spark: the Python driver, its JVM and the Python
workers; sampled every 0.2 s) and the served NDCG@10 on all, repeat and new targets from the
evaluation report. Spark runs in local mode on this machine's cores (`--spark-master`), with
SPARK_DRIVER_MEMORY (default here 12g) as its JVM heap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import OUT, ROOT, children, rss_mb  # noqa: E402
from bench.train_bench import ensure_data, size_label  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_mb(p)
            todo.extend(children(p))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float, str, str]:
    """(wall seconds, peak tree RSS in MB, stdout, stderr) of `python ARGS` from the root."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    return time.perf_counter() - t, peak[0], out, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="viewers in the generated log")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--engines", default="implicit,spark", help="comma-separated, run in this order")
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--no-evaluate", action="store_true", help="train only (no quality figures)")
    args = parser.parse_args(argv)

    data = ensure_data(args.users)
    env = dict(os.environ, SPARK_DRIVER_MEMORY=os.environ.get("SPARK_DRIVER_MEMORY", "12g"), LOG_LEVEL="INFO")
    print(f"data: {data} ({data.stat().st_size / 1e6:.0f} MB), {args.factors} factors, {args.iterations} sweeps")
    results = {}
    for engine in args.engines.split(","):
        model = OUT / f"model{size_label(args.users)}-{engine}.pkl"
        cmd = ["als_fit.py", "--data", str(data), "--model", str(model), "--engine", engine]
        cmd += ["--factors", str(args.factors), "--iterations", str(args.iterations)]
        cmd += ["--spark-master", args.spark_master] if engine == "spark" else []
        cmd += [] if args.no_evaluate else ["--evaluate"]
        wall, peak, out, err = measure(cmd, env)
        steps = dict(re.findall(r"([\w/ ]+?) ([\d.]+)s", out.split("time: ", 1)[1].splitlines()[0]))
        steps = {k.strip(" ,"): float(v) for k, v in steps.items()}
        validation = {k: float(v) for k, v in re.findall(r"validation / (\w+) +([\d.]+)s", err)}
        row = {
            "wall_s": round(wall, 1),
            "train_s": steps.get("total"),
            "peak_mb": round(peak),
            "model_mb": round(model.stat().st_size / 1e6, 1),
            "steps": {k: v for k, v in steps.items() if k != "total"},
            "validation_steps": validation,
            # What the Spark driver collected, as it logged it (SCALE.md)
            "driver": re.findall(r"driver: (.*)", err),
        }
        if not args.no_evaluate:
            report = json.loads(Path(str(model).removesuffix(".pkl") + ".evaluation.json").read_text())
            row["ndcg@10"] = {t: round(report["results"][t]["served"]["NDCG@10"], 4) for t in ("all", "repeat", "new")}
        results[engine] = row
        print(f"{engine:9s} {json.dumps(row)}", flush=True)
    if {"implicit", "spark"} <= results.keys():
        a, b = results["implicit"], results["spark"]
        print(
            f"spark / implicit: training {b['train_s'] / a['train_s']:.1f}x the time, "
            f"peak memory {b['peak_mb'] / a['peak_mb']:.1f}x"
        )
        if "ndcg@10" in a:
            print(
                "served NDCG@10 spark / implicit: "
                + ", ".join(f"{t} {b['ndcg@10'][t] / a['ndcg@10'][t]:.3f}" for t in ("all", "repeat", "new"))
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

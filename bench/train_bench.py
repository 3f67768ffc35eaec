"""Training at Twitch-100k scale and beyond: `python als_fit.py` end to end next to a bare pipeline.

    python bench/train_bench.py                   # generates bench/out/twitch100k.csv on first use
    python bench/train_bench.py --repeat 2        # alternate the two, report the best of each
    python bench/train_bench.py --users 1000000   # ten times the public sample (bench/out/twitch1m.csv)
    python bench/train_bench.py --baseline ../previous --repeat 5   # this checkout against another

The data: `demo_data.py --users N --no-header` (calibrated to the public file), about 30 sessions per
viewer in the public file's headerless layout (3M at 100k viewers). Both runs are separate
processes measured in the same run, alternating, each with its wall time and peak resident
memory (from wait4). The trainer's own breakdown comes from its summary line. Goals: end to end
at most 1.25x the bare pipeline; peak memory under 3 GB at 100k viewers, 6 GB at a million.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import OUT, ROOT  # noqa: E402


def size_label(users: int) -> str:
    return f"{users // 1_000_000}m" if users % 1_000_000 == 0 else f"{users // 1000}k"


def paths(users: int) -> tuple[Path, Path]:
    """(sessions CSV, model file) of a benchmark size."""
    label = size_label(users)
    return OUT / f"twitch{label}.csv", OUT / f"model{label}.pkl"


def ensure_data(users: int) -> Path:
    data, _ = paths(users)
    if not data.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "streamrec.data.demo",
                "--users",
                str(users),
                "--no-header",
                "--out",
                str(data),
            ],
            cwd=ROOT,
            check=True,
        )
    return data


def measure(args: list[str], cwd: Path = ROOT) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of `python ARGS` from the checkout `cwd`."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out}")
    return wall, usage.ru_maxrss / 1024, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each")
    parser.add_argument("--users", type=int, default=100_000, help="viewers in the generated log")
    parser.add_argument("--baseline", type=Path, help="another checkout: train with both, alternating")
    args = parser.parse_args(argv)
    result = versus(args.users, args.baseline.resolve(), args.repeat) if args.baseline else run(args.users, args.repeat)
    print(json.dumps(result))
    return 0


def versus(users: int, baseline: Path, repeat: int) -> dict:
    """`python als_fit.py` of this checkout and of `baseline` on the same log, alternating (the
    first of each pair alternates too); medians of wall time and peak memory, and their ratio."""
    data, _ = paths(users)
    ensure_data(users)
    runs: dict[str, list[tuple[float, float]]] = {"this": [], "baseline": []}
    for i in range(repeat):
        order = ("this", "baseline") if i % 2 == 0 else ("baseline", "this")
        for name in order:
            model = OUT / f"versus-{name}.pkl"
            train = ["als_fit.py", "--data", str(data), "--model", str(model), "--factors", "64", "--iterations", "15"]
            wall, rss, _ = measure(train, ROOT if name == "this" else baseline)
            runs[name].append((wall, rss))
            print(f"{name:<9} run {i + 1}: {wall:6.1f} s wall, peak {rss:6.0f} MB", flush=True)
    med = {name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r)) for name, r in runs.items()}
    print(
        f"median of {repeat}: this {med['this'][0]:.1f} s, {med['this'][1]:.0f} MB; baseline "
        f"{med['baseline'][0]:.1f} s, {med['baseline'][1]:.0f} MB; this/baseline "
        f"{med['this'][0] / med['baseline'][0]:.3f}x time, {med['this'][1] / med['baseline'][1]:.3f}x memory"
    )
    return {"users": users, "runs": runs, "median": med}


def run(users: int, repeat: int = 1) -> dict:
    """Train both ways on the log of `users` viewers; print the comparison, return the figures."""
    DATA, MODEL = paths(users)
    ensure_data(users)
    bare, ours = [], []
    for _ in range(repeat):
        wall, rss, out = measure(["bench/bare_pipeline.py", str(DATA)])
        bare.append((wall, rss, json.loads(out.strip().splitlines()[-1])))
        wall, rss, out = measure(
            ["als_fit.py", "--data", str(DATA), "--model", str(MODEL), "--factors", "64", "--iterations", "15"]
        )
        steps = dict(re.findall(r"(\w+) ([\d.]+)s", out.split("time: ", 1)[1].splitlines()[0]))
        ours.append((wall, rss, steps))
    b, o = min(bare, key=lambda r: r[0]), min(ours, key=lambda r: r[0])
    print(f"data: {DATA} ({DATA.stat().st_size / 1e6:.0f} MB)")
    print(
        f"bare pipeline  {b[0]:6.1f} s wall, peak {b[1]:6.0f} MB   "
        + ", ".join(f"{k} {v:.2f}s" for k, v in b[2].items())
    )
    print(
        f"als_fit.py     {o[0]:6.1f} s wall, peak {o[1]:6.0f} MB   "
        + ", ".join(f"{k} {v}s" for k, v in o[2].items() if k != "total")
    )
    print(f"ratio          {o[0] / b[0]:6.2f}x (goal <= 1.25x); peak memory {o[1] / 1024:.2f} GB")
    return {
        "users": users,
        "bare_s": round(b[0], 2),
        "ours_s": round(o[0], 2),
        "ratio": round(o[0] / b[0], 3),
        "bare_peak_mb": round(b[1]),
        "ours_peak_mb": round(o[1]),
        "ours_steps": o[2],
        "bare_steps": b[2],
        "model_mb": round(MODEL.stat().st_size / 1e6, 1),
    }


if __name__ == "__main__":
    sys.exit(main())

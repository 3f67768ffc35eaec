"""Training at Twitch-100k scale: `python als_fit.py` end to end next to a bare pipeline.

    python bench/train_bench.py              # generates bench/out/twitch100k.csv on first use
    python bench/train_bench.py --repeat 2   # alternate the two, report the best of each

The data: `demo_data.py --users 100000 --streamers-per-user 1.6 --no-header`, about 3M sessions
in the public file's headerless layout. Both runs are separate processes measured in the same
run, alternating, each with its wall time and peak resident memory (from wait4). The trainer's own
breakdown comes from its summary line. Goal: end to end at most 1.25x the bare pipeline, peak
memory under 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import OUT, ROOT  # noqa: E402

DATA = OUT / "twitch100k.csv"
MODEL = OUT / "model100k.pkl"


def ensure_data() -> None:
    if not DATA.exists():
        subprocess.run(
            [
                sys.executable,
                "demo_data.py",
                "--users",
                "100000",
                "--streamers-per-user",
                "1.6",
                "--no-header",
                "--out",
                str(DATA),
            ],
            cwd=ROOT,
            check=True,
        )


def measure(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of `python ARGS` from the repository root."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
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
    args = parser.parse_args(argv)
    ensure_data()
    bare, ours = [], []
    for _ in range(args.repeat):
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
    print(f"ratio          {o[0] / b[0]:6.2f}x (goal <= 1.25x); peak memory {o[1] / 1024:.2f} GB (goal < 3 GB)")
    print(
        json.dumps(
            {
                "bare_s": round(b[0], 2),
                "ours_s": round(o[0], 2),
                "ratio": round(o[0] / b[0], 3),
                "bare_peak_mb": round(b[1]),
                "ours_peak_mb": round(o[1]),
                "ours_steps": o[2],
                "bare_steps": b[2],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A host that joins with a cold page cache: latency in its first 15 seconds after it reports ready,
against the steady state, with the model's pages read in before ready (WARM_SECONDS, the default)
and without (WARM_SECONDS=0: ready at once, pages read on first touch).

    python bench/warm_bench.py --model bench/out/model1m.pkl --users 1000000

For each run, alternating the two: the model file's pages are dropped from the page cache
(posix_fadvise DONTNEED, which needs no root, and /proc/sys/vm/drop_caches as well when writable),
`platform.py` (one worker) is started and polled on GET /ready; the moment it answers 200, wrk runs
for WINDOW seconds (the first window), then again (the steady state). Prints the time to ready,
both p99s and their ratio (goal: at most 2x with the pages read in). Needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import start_server, stop_server  # noqa: E402
from bench.serve_bench import require_wrk, wrk  # noqa: E402


def drop_pages(path: Path) -> str:
    """Drop `path`'s pages from the page cache; returns how much of it is still cached (fincore)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        pass  # not root, or a container: DONTNEED alone
    if shutil.which("fincore"):
        out = subprocess.run(["fincore", "-nb", str(path)], capture_output=True, text=True).stdout.split()
        return f"{int(out[0]) / 2**20:.0f} MB cached" if out else "?"
    return "fincore not installed"


def run_once(model: Path, warm_seconds: str, users: int, window: float) -> dict:
    cached = drop_pages(model)
    env = {**os.environ, "WARM_SECONDS": warm_seconds, "LOG_LEVEL": "INFO"}
    started = time.perf_counter()
    proc, base = start_server(["platform.py", "--model", str(model), "--workers", "1"], env=env, ready="/ready")
    ready_s = time.perf_counter() - started
    try:
        first = wrk(base, window, users=users)
        steady = wrk(base, window, users=users)
    finally:
        stop_server(proc)
    warm_line = next((line for line in Path(proc.log_path).read_text().splitlines() if "pages in memory" in line), "")
    return {
        "cached_before": cached,
        "ready_s": round(ready_s, 1),
        "first_p99_ms": first["p99_ms"],
        "steady_p99_ms": steady["p99_ms"],
        "first_rps": round(first["rps"]),
        "steady_rps": round(steady["rps"]),
        "ratio": round(first["p99_ms"] / steady["p99_ms"], 2),
        "log": warm_line.split(" service ", 1)[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("bench/out/model1m.pkl"), help="model file")
    parser.add_argument("--users", type=int, default=1_000_000, help="viewers in the model (wrk's user ids)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--window", type=float, default=15, help="seconds of each wrk window")
    args = parser.parse_args(argv)
    require_wrk()
    model = args.model.resolve()
    variants = {"pages read before ready": "120", "ready at once (WARM_SECONDS=0)": "0"}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, seconds in variants.items():
            r = run_once(model, seconds, args.users, args.window)
            runs[name].append(r)
            print(
                f"{name:<31} {r['cached_before']:>16} before start; ready in {r['ready_s']:5.1f} s; p99 first "
                f"{args.window:.0f} s {r['first_p99_ms']:7.2f} ms, then {r['steady_p99_ms']:6.2f} ms "
                f"({r['ratio']:.2f}x); {r['first_rps']}/{r['steady_rps']} req/s  {r['log']}",
                flush=True,
            )
    summary = {
        name: {
            "ready_s": statistics.median(r["ready_s"] for r in rs),
            "first_p99_ms": statistics.median(r["first_p99_ms"] for r in rs),
            "steady_p99_ms": statistics.median(r["steady_p99_ms"] for r in rs),
            "ratio": statistics.median(r["ratio"] for r in rs),
        }
        for name, rs in runs.items()
    }
    for name, s in summary.items():
        print(
            f"median {name:<31} ready {s['ready_s']:.1f} s, p99 first window {s['first_p99_ms']:.2f} ms against "
            f"{s['steady_p99_ms']:.2f} ms steady: {s['ratio']:.2f}x (goal <= 2x with the pages read in)"
        )
    print(json.dumps({"runs": runs, "median": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A big live set on a big model: how long `PUT /live` takes and what a live-only request costs
while no live-only lists are ranked in advance (past serve/live.py's LIVE_LISTS_MAX_PAIRS).

    python bench/live_bench.py --model bench/out/model1m.pkl --live 100000

Starts `platform.py` (one worker) on the model, PUTs a live set of LIVE streamers drawn by
popularity (with categories, languages and viewers), then asks REQUESTS live-only lists of known
viewers one after another (a new connection each) and prints the PUT's time and the requests'
median and p99.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import httpx2 as httpx  # noqa: E402

from bench.common import ROOT, start_server, stop_server  # noqa: E402
from bench.serve_bench import TOKEN  # noqa: E402
from bench.store_bench import AUTH, live_sets  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/model1m.pkl", help="model file")
    parser.add_argument("--live", type=int, default=100_000, help="live streamers published")
    parser.add_argument("--requests", type=int, default=200, help="live-only requests timed")
    args = parser.parse_args(argv)
    streams = live_sets(args.model, args.live, 1)[0]
    env = {**os.environ, "ADMIN_TOKEN": TOKEN, "MAX_BODY_BYTES": str(256 << 20)}
    proc, base = start_server(["platform.py", "--model", str(args.model), "--workers", "1"], env=env, ready="/ready")
    try:
        started = time.perf_counter()
        r = httpx.put(f"{base}/live", json={"streamers": streams}, headers=AUTH, timeout=600)
        r.raise_for_status()
        put_s = time.perf_counter() - started
        seconds = []
        for user in range(1, args.requests + 1):
            started = time.perf_counter()
            answer = httpx.get(f"{base}/recomendations/user/{user}", params={"live_only": "true"}, timeout=60)
            seconds.append(time.perf_counter() - started)
            answer.raise_for_status()
        health = httpx.get(f"{base}/health").json()
    finally:
        stop_server(proc)
    seconds.sort()
    print(
        f"{health['users']:,} viewers, {r.json()['live']:,} live: PUT /live {put_s:.2f} s; live-only request "
        f"median {statistics.median(seconds) * 1e3:.1f} ms, p99 {seconds[int(len(seconds) * 0.99) - 1] * 1e3:.1f} ms "
        f"(lists ranked in advance: {health['live_lists_ready'] and r.json()['live'] * health['users'] <= 2e9})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

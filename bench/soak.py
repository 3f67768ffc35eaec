"""Sustained load on a real server: zero errors and flat memory, or exit 1.

    python bench/soak.py --model models/model.pkl --seconds 300 --concurrency 16

Starts `python platform.py` on a free local port, then keeps `--concurrency` clients busy for
`--seconds` with requests for many distinct viewers (90% known to the model, 10% never seen
before, each unknown id new), random k in 1..100 and random exclude_watched. It samples the
server's anonymous resident memory (its heap: the mapped model file is page cache, shared and
not a leak) every second and compares the last sample with the one taken after the first
quarter (warm-up). Prints a summary and, last, one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import ROOT, anon_mb, start_server, stop_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models/model.pkl", help="model file to serve")
    parser.add_argument("--seconds", type=float, default=300, help="how long to keep the load on")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="allowed anonymous memory growth")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the request mix")
    args = parser.parse_args(argv)

    from streamrec.model.model_file import load_model

    known = load_model(args.model).users.ids.tolist()
    proc, base = start_server(["platform.py", "--model", str(args.model)])
    statuses: Counter = Counter()
    errors: list[str] = []
    users_seen: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client(worker: int) -> None:
        rng = random.Random(args.seed * 1000 + worker)
        with httpx.Client(base_url=base, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                uid = rng.choice(known) if rng.random() < 0.9 else f"new-{worker}-{n}"
                params = {"k": rng.randint(1, 100), "exclude_watched": rng.choice(["true", "false"])}
                try:
                    r = http.get(f"/recomendations/user/{uid}", params=params)
                    ok = r.status_code == 200 and len(r.json()["recommendations"]) >= 1
                    status = r.status_code
                except (httpx.HTTPError, ValueError) as exc:
                    ok, status = False, type(exc).__name__
                with lock:
                    statuses[status] += 1
                    users_seen.add(uid)
                    if not ok and len(errors) < 10:
                        errors.append(f"{uid}: {status}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples: list[tuple[float, float]] = []
    try:
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            samples.append((time.monotonic() - t0, anon_mb(proc.pid)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - t0
        stop_server(proc)

    warm = samples[max(0, len(samples) // 4 - 1)][1]
    last = samples[-1][1]
    total = sum(statuses.values())
    failed = total - statuses.get(200, 0)
    result = {
        "seconds": round(elapsed, 1),
        "requests": total,
        "requests_per_second": round(total / elapsed, 1),
        "distinct_users": len(users_seen),
        "errors": failed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "anon_mb_after_warmup": round(warm, 1),
        "anon_mb_end": round(last, 1),
        "anon_mb_max": round(max(r for _, r in samples), 1),
        "anon_growth_mb": round(last - warm, 1),
    }
    print(
        f"{total:,} requests in {elapsed:.0f}s ({result['requests_per_second']:,.0f}/s), "
        f"{len(users_seen):,} distinct users, {failed} errors; anonymous memory {warm:.1f} MB after "
        f"warm-up, {last:.1f} MB at the end (max {result['anon_mb_max']:.1f} MB)"
    )
    for e in errors:
        print(f"  error: {e}")
    print(json.dumps(result))
    return 0 if failed == 0 and last - warm <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())

"""POST /events at Twitch-100k scale: ingest rates into both logs, what a worker holds, and the
latency of a request for a viewer with events, against the same server without them.

    python bench/events_bench.py                    # bench/out/model100k.pkl (trained if missing)
    python bench/events_bench.py --sessions 1000000 --seconds 15 --rounds 2

1. Ingest into the file log: one worker, batches of 500 sessions sent by --clients threads, each
   acknowledged only once synced to disk: sessions per second, batch latency p50/p99 (goal:
   20,000 sessions a second).
2. The worker's memory before and after holding --sessions sessions of --viewers viewers (goal:
   measured with 1M sessions of 200k viewers), and the held count from /metrics.
3. A request for a viewer with events (viewers 1..--wrk-users, each with events) against the same
   request on a server with no events, side by side and alternating under `wrk -t2 -c16`
   (goal: p99 at most 15 ms).
4. Ingest into the store: a real redis-server with appendfsync always (needs redis-server).
Needs wrk and redis-server.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import httpx2 as httpx  # noqa: E402

from bench.common import ROOT, children, private_mb, rss_mb, start_server, stop_server  # noqa: E402
from bench.serve_bench import require_wrk, wrk  # noqa: E402
from tests.server.helpers import RedisServer, clean_env, metric_value  # noqa: E402

TOKEN = "bench-ingest-token-0001"
BATCH = 500


def batches(model_path: Path, sessions: int, viewers: int, seed: int = 0) -> list[bytes]:
    """Bodies of BATCH sessions: viewers 1..`viewers` (the log's uids: known to the model up to its
    size, new beyond), streamers drawn from the model's by popularity, times from the model's end on."""
    from streamrec.model.model_file import load_model

    model = load_model(model_path)
    rng = random.Random(seed)
    names = [model.streamers.name(int(r)) for r in model.popular_ranking[:20_000]]
    weights = [1.0 / (i + 10) for i in range(len(names))]
    picks = rng.choices(names, weights, k=sessions)
    t = model.time_max
    out = []
    for lo in range(0, sessions, BATCH):
        items = []
        for i in range(lo, min(lo + BATCH, sessions)):
            start = t + (i * 100) // sessions  # the log moves on by 100 steps over the run
            items.append(
                {
                    "uid": str(rng.randint(1, viewers)),
                    "session_id": i,
                    "streamer_name": picks[i],
                    "time_start": start,
                    "time_end": start + rng.randint(1, 6),
                }
            )
        out.append(json.dumps({"sessions": items}).encode())
    return out


def ingest(base: str, bodies: list[bytes], clients: int) -> dict:
    """Send every body (threads, one connection each); sessions per second and batch latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = list(reversed(bodies))
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) as c:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                t = time.perf_counter()
                r = c.post(f"{base}/events", content=body, timeout=30)
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
                    if r.status_code != 202:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    t = time.perf_counter()
    threads = [threading.Thread(target=send) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    latencies.sort()
    sessions = len(bodies) * BATCH
    return {
        "sessions": sessions,
        "seconds": round(seconds, 2),
        "sessions_per_s": round(sessions / seconds),
        "batch_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "batch_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def worker_memory(proc) -> dict:
    pid = children(proc.pid)[0] if children(proc.pid) else proc.pid
    return {"rss_mb": round(rss_mb(pid), 1), "private_mb": round(private_mb(pid), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="viewers of the benchmark log (train_bench.py)")
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions ingested into the file log")
    parser.add_argument("--viewers", type=int, default=200_000, help="distinct viewers they come from")
    parser.add_argument("--store-sessions", type=int, default=300_000, help="sessions ingested into the store")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders")
    parser.add_argument("--wrk-users", type=int, default=20_000, help="viewers requested under wrk (all with events)")
    parser.add_argument("--seconds", type=float, default=15, help="wrk duration per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating wrk rounds of each server")
    parser.add_argument("--store-only", action="store_true", help="only the ingest into the store (4.)")
    args = parser.parse_args(argv)
    require_wrk()
    from bench.train_bench import paths

    _, model_path = paths(args.users)
    if not model_path.exists():
        subprocess.run([sys.executable, "bench/train_bench.py", "--users", str(args.users)], cwd=ROOT, check=True)
    results: dict = {"model": str(model_path)}
    bodies = batches(model_path, args.sessions, args.viewers)
    # every viewer requested under wrk has events: one session each first
    primer = batches(model_path, args.wrk_users, args.wrk_users, seed=1)

    with tempfile.TemporaryDirectory() as folder:
        if not args.store_only:
            file_phases(args, model_path, bodies, primer, folder, results)
        store_phase(args, model_path, bodies, folder, results)
    print(json.dumps(results))
    return 0


def file_phases(args, model_path: Path, bodies: list[bytes], primer: list[bytes], folder: str, results: dict) -> None:
    """1-3: ingest into the file log, memory, requests with events against without."""
    env = clean_env(INGEST_TOKEN=TOKEN, EVENTS_PATH=f"{folder}/events", LOG_LEVEL="WARNING")
    plain_env = clean_env(LOG_LEVEL="WARNING")
    proc, base = start_server(["platform.py", "--model", str(model_path)], env=env)
    try:
        time.sleep(2)
        results["memory_before"] = worker_memory(proc)
        results["file_ingest"] = ingest(base, bodies, args.clients)
        print("file log ingest:", results["file_ingest"])
        ingest(base, primer, args.clients)
        time.sleep(2)  # the metrics are flushed once a second
        text = httpx.get(f"{base}/metrics").text
        results["pending_sessions"] = metric_value(text, "streamrec_events_pending_sessions")
        results["memory_after"] = worker_memory(proc)
        grown = results["memory_after"]["private_mb"] - results["memory_before"]["private_mb"]
        results["held_mb"] = round(grown, 1)
        print(f"held {results['pending_sessions']:.0f} sessions: private memory +{grown:.1f} MB", flush=True)
        plain, plain_base = start_server(["platform.py", "--model", str(model_path)], env=plain_env)
        try:
            runs: dict[str, list] = {"with_events": [], "without": []}
            for _ in range(args.rounds):
                for side, url in (("with_events", base), ("without", plain_base)):
                    runs[side].append(wrk(url, args.seconds, users=args.wrk_users))
                    print(side, runs[side][-1], flush=True)
            results["wrk"] = {
                side: {
                    "rps": statistics.median(r["rps"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                }
                for side, rs in runs.items()
            }
        finally:
            stop_server(plain)
    finally:
        stop_server(proc)


def store_phase(args, model_path: Path, bodies: list[bytes], folder: str, results: dict) -> None:
    """4: ingest into the store's stream."""
    store = RedisServer(Path(folder) / "redis", durable=True).start()
    try:
        env = clean_env(INGEST_TOKEN=TOKEN, REDIS_URL=store.url, LOG_LEVEL="WARNING")
        proc, base = start_server(["platform.py", "--model", str(model_path)], env=env)
        try:
            results["store_ingest"] = ingest(base, bodies[: args.store_sessions // BATCH], args.clients)
            print("store ingest:", results["store_ingest"])
        finally:
            stop_server(proc)
    finally:
        store.stop()


if __name__ == "__main__":
    sys.exit(main())

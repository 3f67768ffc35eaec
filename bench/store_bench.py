"""Several hosts, one store: how fast a live set reaches every worker, what the store costs a GET,
and how much memory a live set takes in the store.

    python bench/store_bench.py --model bench/out/model100k.pkl --users 100000

Starts a real redis-server (from PATH) on a free port, then:

1. Publish to visible: two hosts (two `platform.py` processes, each in its own folder with its own
   copy of the model, two workers each) on the store. PUBLISHES times a live set of LIVE streamers
   (drawn by popularity, with categories, languages and viewers) is PUT on host A; after each 200,
   /health is asked on new connections of both hosts until every worker reports the new set's
   version; the next set is PUT a second later. Prints the time until the last worker serves a set
   (the goal: p99 under 1 s), and for the last set the time until every worker's live-only lists
   are ranked (the earlier sets' lists are dropped half-ranked when the next set comes).
2. GET throughput with and without the store: one worker with REDIS_URL and one without, side by
   side, the same model and live set; wrk alternating between them (medians), both start orders.
3. Memory: a live set of 100,000 streamers (the model's and made-up names) PUT through a host:
   the store's `MEMORY USAGE` of the live key and its used_memory before and after.
Needs wrk and redis-server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import httpx2 as httpx  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from bench.common import ROOT, start_server, stop_server  # noqa: E402
from bench.serve_bench import TOKEN, category_language, require_wrk, wrk  # noqa: E402
from streamrec.model.model_file import load_model  # noqa: E402
from tests.server.helpers import RedisServer  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def live_sets(model_path: Path, size: int, count: int, seed: int = 0) -> list[list[dict]]:
    """`count` live sets of `size` streamers of the model, drawn by popularity, with metadata."""
    model = load_model(model_path)
    p = model.popularity + 1.0
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        rows = rng.choice(model.n_streamers, min(size, model.n_streamers), replace=False, p=p / p.sum())
        names = model.streamers.ids[rows].tolist()
        sets.append(
            [
                {"streamer_name": n, "category": c, "language": lang, "viewers": int(v)}
                for n, (c, lang), v in zip(
                    names, map(category_language, names), rng.integers(0, 5000, len(names)), strict=True
                )
            ]
        )
    return sets


def start_host(folder: Path, model_path: Path, workers: int, **env: str):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, folder / "model.pkl")
    env = {
        **os.environ,
        "ADMIN_TOKEN": TOKEN,
        "INSTANCE_NAME": folder.name,
        "MAX_BODY_BYTES": str(256 << 20),
        **env,
    }
    return start_server(
        [str(ROOT / "platform.py"), "--model", "model.pkl", "--workers", str(workers)], env=env, cwd=folder
    )


class Poller:
    """One kept-alive connection to each worker behind `base` (new connections land on any worker
    until every one has one), polled for /health: cheap enough not to take the cores it measures."""

    def __init__(self, base: str, workers: int):
        host, port = base.removeprefix("http://").split(":")
        self.conns: dict[int, http.client.HTTPConnection] = {}
        for _ in range(500):
            if len(self.conns) == workers:
                return
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            pid = self.health(conn)["worker_pid"]
            if pid in self.conns:
                conn.close()
            else:
                self.conns[pid] = conn
        raise RuntimeError(f"found {len(self.conns)} of {workers} workers behind {base}")

    @staticmethod
    def health(conn: http.client.HTTPConnection) -> dict:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())

    def wait_for(self, version: str) -> None:
        """Return once every worker answered /health with live set `version`."""
        pending = set(self.conns)
        while pending:
            for pid in list(pending):
                if self.health(self.conns[pid])["live_version"] == version:
                    pending.discard(pid)
            time.sleep(0.002)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def fleet_lists_ready(base: str, version: str, workers: int) -> bool:
    fleet = httpx.get(f"{base}/admin/fleet", headers=AUTH, timeout=10).json()["workers"]
    ours = [w for w in fleet if w["live_version"] == version]
    return len(ours) >= workers and all(w["live_lists_ready"] for w in ours)


def publish_to_visible(model_path: Path, store: RedisServer, folder: Path, sets: list[list[dict]]) -> dict:
    hosts = [start_host(folder / name, model_path, 2, REDIS_URL=store.url) for name in ("host-a", "host-b")]
    try:
        (_, a), (_, b) = hosts
        pollers = [Poller(a, 2), Poller(b, 2)]
        visible, ranked = [], []
        for i, streams in enumerate(sets):
            r = httpx.put(f"{a}/live", json={"streamers": streams}, headers=AUTH, timeout=60)
            r.raise_for_status()
            answered = time.perf_counter()
            version = r.json()["version"]
            for poller in pollers:
                poller.wait_for(version)
            visible.append(time.perf_counter() - answered)
            if i == len(sets) - 1:  # the last set's lists: the others are dropped for the next set
                while not fleet_lists_ready(a, version, 4):
                    time.sleep(0.1)
                ranked.append(time.perf_counter() - answered)
            else:
                time.sleep(1.0)
        for poller in pollers:
            poller.close()
        return {
            "publishes": len(sets),
            "live": r.json()["live"],
            "visible_s": {
                "p50": statistics.median(visible),
                "p99": float(np.percentile(visible, 99)),
                "max": max(visible),
            },
            "last_lists_ranked_s": ranked[0],
        }
    finally:
        for proc, _ in hosts:
            stop_server(proc)


def with_and_without(
    model_path: Path,
    store: RedisServer,
    folder: Path,
    streams: list[dict],
    users: int,
    alternations: int,
    seconds: float,
) -> dict:
    """GET throughput of one worker with REDIS_URL against one without, side by side."""
    out: dict[str, dict] = {}
    for order in (("store", "files"), ("files", "store")):
        servers = {}
        try:
            for name in order:
                env = {"REDIS_URL": store.url} if name == "store" else {}
                servers[name] = start_host(folder / f"{name}-{order[0]}", model_path, 1, **env)
                r = httpx.put(f"{servers[name][1]}/live", json={"streamers": streams}, headers=AUTH, timeout=60)
                r.raise_for_status()
            for _, base in servers.values():  # live-only lists ranked, on both
                while not httpx.get(f"{base}/health", timeout=10).json()["live_lists_ready"]:
                    time.sleep(0.5)
            for query in ("", "?live_only=true"):
                runs: dict[str, list[dict]] = {"store": [], "files": []}
                for name in order:
                    wrk(servers[name][1], 2, query, users)  # warm-up
                for _ in range(alternations):
                    for name in order:
                        proc, base = servers[name]
                        runs[name].append(wrk(base, seconds, query, users, proc.pid))
                kind = query or "default"
                for name, rs in runs.items():
                    out.setdefault(kind, {}).setdefault(name, []).append(statistics.median(r["rps"] for r in rs))
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    return {
        kind: {
            "store_rps": [round(x) for x in sides["store"]],
            "files_rps": [round(x) for x in sides["files"]],
            "store/files": round(
                float(np.exp(np.mean(np.log(np.array(sides["store"]) / np.array(sides["files"]))))), 3
            ),
        }
        for kind, sides in out.items()
    }


def store_memory(model_path: Path, store: RedisServer, folder: Path, size: int) -> dict:
    """The store's memory for a live set of `size` streamers, published through a host."""
    streams = live_sets(model_path, size, 1, seed=1)[0]
    for i in range(len(streams), size):  # more streamers than the model has: made-up ones, as long
        name = f"streamer_{i:07d}_live"
        category, language = category_language(name)
        streams.append({"streamer_name": name, "category": category, "language": language, "viewers": i % 5000})
    client = redis.Redis(host="127.0.0.1", port=store.port, password=store.password)
    client.delete("streamrec:live")
    before = client.info("memory")["used_memory"]
    proc, base = start_host(folder / "memory", model_path, 1, REDIS_URL=store.url)
    try:
        body = json.dumps({"streamers": streams}).encode()
        t = time.perf_counter()
        r = httpx.put(f"{base}/live", content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=120)
        r.raise_for_status()
        put_s = time.perf_counter() - t
    finally:
        stop_server(proc)
    usage = client.memory_usage("streamrec:live")
    after = client.info("memory")["used_memory"]
    return {
        "streamers": size,
        "request_mb": round(len(body) / 1e6, 1),
        "put_s": round(put_s, 2),
        "live_key_mb": round((usage or 0) / 1e6, 1),
        "used_memory_delta_mb": round((after - before) / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/model100k.pkl", help="model file")
    parser.add_argument("--users", type=int, default=100_000, help="viewers in the model (wrk's user ids)")
    parser.add_argument("--live", type=int, default=10_000, help="streamers per published live set")
    parser.add_argument("--publishes", type=int, default=20, help="live sets published")
    parser.add_argument("--alternations", type=int, default=5, help="wrk runs of each server per kind and order")
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per run")
    parser.add_argument("--memory-streamers", type=int, default=100_000, help="streamers of the memory run")
    parser.add_argument("--skip", nargs="*", default=[], choices=["visible", "throughput", "memory"])
    args = parser.parse_args(argv)
    require_wrk()
    model = args.model.resolve()
    folder = Path(tempfile.mkdtemp(prefix="store-bench-"))
    store = RedisServer(folder / "redis").start()
    results: dict = {"model": str(model)}
    try:
        sets = live_sets(model, args.live, args.publishes)
        if "visible" not in args.skip:
            r = results["visible"] = publish_to_visible(model, store, folder, sets)
            print(
                f"publish to visible on every worker of 2 hosts x 2 workers, {r['publishes']} sets of {r['live']:,} "
                f"live, 1 s apart: p50 {r['visible_s']['p50'] * 1e3:.0f} ms, p99 {r['visible_s']['p99'] * 1e3:.0f} ms, "
                f"max {r['visible_s']['max'] * 1e3:.0f} ms (goal p99 < 1 s); the last set's live-only lists ranked "
                f"on every worker {r['last_lists_ranked_s']:.1f} s after its 200",
                flush=True,
            )
        if "throughput" not in args.skip:
            r = results["throughput"] = with_and_without(
                model, store, folder, sets[0], args.users, args.alternations, args.seconds
            )
            for kind, x in r.items():
                print(
                    f"GET {kind}: with the store {x['store_rps']} req/s, without {x['files_rps']} (the two start "
                    f"orders); with/without {x['store/files']:.3f}x (goal >= 0.95x)",
                    flush=True,
                )
        if "memory" not in args.skip:
            r = results["memory"] = store_memory(model, store, folder, args.memory_streamers)
            print(
                f"store memory for a live set of {r['streamers']:,} streamers ({r['request_mb']} MB of JSON, PUT in "
                f"{r['put_s']} s): the live key {r['live_key_mb']} MB, used_memory +{r['used_memory_delta_mb']} MB",
                flush=True,
            )
    finally:
        store.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

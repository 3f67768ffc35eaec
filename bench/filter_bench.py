"""What a stream of distinct category/language filters costs a worker: memory and time.

    python bench/filter_bench.py --model bench/out/model1m.pkl            # this checkout
    python bench/filter_bench.py --model bench/out/model1m.pkl --repo ../previous   # another one

Starts `platform.py --workers 1` of this checkout (or of --repo, to measure a previous release on
the same model), publishes every streamer the model knows as live (the largest entries a filter
can have: MAX_BODY_BYTES is raised for it; --live N: the N most popular), warms up, then sends --requests GETs on fresh
filters: a third junk (six real languages and one value no streamer has), a third distinct valid
category/language combinations, a third the same live-only. Prints the worker's anonymous memory
(RssAnon: heap, not the mapped model) once the live set is in, after 300 warm-up filters and after
the stream, and the server's CPU time per request
for that stream, for distinct valid filters (cache misses) and for one filter repeated (hits). Categories and
languages are the demo catalog's (serve_bench.write_catalog).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import httpx2 as httpx  # noqa: E402

from bench.common import ROOT, anon_mb, start_server, stop_server  # noqa: E402
from bench.serve_bench import cpu_seconds, write_catalog  # noqa: E402

TOKEN = "filter-bench-admin-token"


def queries(n: int, seed: int = 0) -> list[dict[str, str]]:
    from streamrec.data.demo import CATEGORIES, LANGUAGES

    rng = random.Random(seed)
    languages = sorted(set(LANGUAGES))
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append({"language": f"en,de,es,fr,ru,pt,junk{i}"})
            continue
        q = {
            "category": ",".join(rng.sample(CATEGORIES, rng.randint(1, 6))),
            "language": ",".join(rng.sample(languages, rng.randint(1, 4))),
        }
        if i % 3 == 2:
            q["live_only"] = "true"
        out.append(q)
    return out


def send(base: str, batch: list[dict[str, str]], pid: int, threads: int = 4) -> tuple[float, list[int]]:
    """(server CPU microseconds per request, statuses) of the batch sent by `threads` keep-alive
    clients. CPU time, not requests per second: the Python clients here are slower than the server."""

    def ask(part: list[tuple[int, dict]]) -> list[int]:
        with httpx.Client(base_url=base, timeout=60) as client:
            return [client.get(f"/recomendations/user/{i % 9000}", params=q).status_code for i, q in part]

    indexed = list(enumerate(batch))
    start = cpu_seconds(pid)
    with ThreadPoolExecutor(threads) as pool:
        statuses = [s for part in pool.map(ask, [indexed[j::threads] for j in range(threads)]) for s in part]
    return (cpu_seconds(pid) - start) / len(batch) * 1e6, statuses


def run(model: Path, repo: Path, requests: int, live: int | None = None) -> dict:
    from streamrec.model.model_file import load_model

    catalog = write_catalog(model)
    loaded = load_model(model)
    rows = loaded.popular_ranking if live is None else loaded.popular_ranking[:live]
    names = loaded.streamers.ids[rows].tolist()
    del loaded
    body = json.dumps({"streamers": names})
    cmd = [str(repo / "platform.py"), "--model", str(model), "--workers", "1"]
    live_dir = tempfile.mkdtemp(prefix="filter-bench-")  # a fresh live set each run, never beside the model
    env = {
        "LIVE_PATH": str(Path(live_dir) / "live.json"),
        "ADMIN_TOKEN": TOKEN,
        "STREAMERS_PATH": str(catalog),
        "MAX_BODY_BYTES": str(max(len(body) * 2, 32 << 20)),
    }
    import os

    proc, base = start_server(cmd, env={**os.environ, **env}, timeout=300)
    try:
        r = httpx.put(
            f"{base}/live",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=600,
        )
        r.raise_for_status()
        live = r.json()["live"]
        started = anon_mb(proc.pid)
        warm = queries(300, seed=1)
        send(base, warm, proc.pid)
        before = anon_mb(proc.pid)
        mixed_us, statuses = send(base, queries(requests), proc.pid)
        after = anon_mb(proc.pid)
        same = [{"category": "Chess,Art", "language": "en"}] * min(requests, 3000)
        hit_us, hit_statuses = send(base, same, proc.pid)
        misses = [{"category": q.get("category", "Music"), "language": q["language"] + ",en"} for q in queries(1000, 7)]
        miss_us, miss_statuses = send(base, misses, proc.pid)
    finally:
        stop_server(proc)
        shutil.rmtree(live_dir, ignore_errors=True)
    figures = {
        "repo": str(repo),
        "model": str(model),
        "streamers_live": live,
        "requests": requests,
        "non_200": sum(s != 200 for s in statuses + hit_statuses + miss_statuses),
        "anon_mb_at_start": round(started, 1),
        "anon_mb_before": round(before, 1),
        "anon_mb_after": round(after, 1),
        "anon_growth_mb": round(after - before, 1),
        "anon_growth_from_start_mb": round(after - started, 1),
        "cpu_us_per_request": {
            "the mixed stream": round(mixed_us),
            "one filter repeated (hits)": round(hit_us),
            "distinct valid filters (misses)": round(miss_us),
        },
    }
    print(json.dumps(figures))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model file to serve")
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose platform.py serves it")
    parser.add_argument("--requests", type=int, default=10_000, help="GETs with distinct filters")
    parser.add_argument("--live", type=int, help="publish the N most popular streamers (default: every one)")
    args = parser.parse_args(argv)
    run(args.model.resolve(), args.repo.resolve(), args.requests, args.live)
    return 0


if __name__ == "__main__":
    sys.exit(main())

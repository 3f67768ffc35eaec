"""This checkout's server against another checkout's, on one model: what a change costs a request.

    python bench/versus_bench.py --model bench/out/model1m.pkl --baseline ../previous

Both servers run side by side (one worker each, the same model, catalog and live set); wrk runs
against one then the other, alternating, for each request kind (default, a narrow filter, a wide
one, live-only), and the whole is done twice, the servers started in one order and then in the
other: on this machine two identical servers differ by up to 12%, the one started second the
faster, and the mean of both orders cancels that. Prints this/baseline ratios of requests per
second and of server CPU time per request (geometric mean of both orders). Needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import ROOT, start_server, stop_server  # noqa: E402
from bench.serve_bench import TOKEN, paired, publish_live, write_catalog, wrk  # noqa: E402

QUERIES = {
    "default": "",
    "category=Chess": "?category=Chess",
    "language=en": "?language=en",
    "live_only": "?live_only=true",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model file both serve")
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--users", type=int, default=100_000, help="viewers in the model (wrk's user ids)")
    parser.add_argument("--alternations", type=int, default=5, help="paired runs per kind and order")
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per run")
    parser.add_argument("--kinds", nargs="+", choices=list(QUERIES), default=list(QUERIES), help="request kinds")
    args = parser.parse_args(argv)
    queries = {kind: QUERIES[kind] for kind in args.kinds}
    model = args.model.resolve()
    catalog = write_catalog(model)
    repos = {"this": ROOT, "baseline": args.baseline.resolve()}
    rounds: dict[str, list[dict]] = {kind: [] for kind in queries}
    for first in ("baseline", "this"):
        folder = tempfile.mkdtemp(prefix="versus-")
        servers = {}
        try:
            for name in (first, "this" if first == "baseline" else "baseline"):
                env = {
                    **os.environ,
                    "ADMIN_TOKEN": TOKEN,
                    "STREAMERS_PATH": str(catalog),
                    "LIVE_PATH": str(Path(folder) / f"{name}.live.json"),
                    "METRICS": "true",
                }
                cmd = [str(repos[name] / "platform.py"), "--model", str(model), "--workers", "1"]
                servers[name] = start_server(cmd, env=env, timeout=300)
            for _, base in servers.values():
                publish_live(base, model)
                wrk(base, 2, users=args.users)  # warm-up
            (base_proc, base_url), (this_proc, this_url) = servers["baseline"], servers["this"]
            for kind, query in queries.items():
                r = paired(
                    (base_url, query, base_proc.pid),
                    (this_url, query, this_proc.pid),
                    args.alternations,
                    args.seconds,
                    args.users,
                )
                rounds[kind].append(r)
                print(
                    f"{kind:<16} {first} started first: this {r['b']['rps']:6.0f} req/s, baseline "
                    f"{r['a']['rps']:6.0f}: {r['b_vs_a']['rps']:.3f}x; CPU per request {r['b_vs_a']['cpu_us']:.3f}x",
                    flush=True,
                )
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
    summary = {
        kind: {q: round(statistics.geometric_mean(r["b_vs_a"][q] for r in rs), 3) for q in ("rps", "p99_ms", "cpu_us")}
        for kind, rs in rounds.items()
    }
    for kind, s in summary.items():
        print(f"{kind:<16} this/baseline, both orders: {s['rps']:.3f}x req/s, {s['cpu_us']:.3f}x CPU per request")
    print(json.dumps({"summary": summary, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

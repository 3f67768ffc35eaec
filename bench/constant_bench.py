"""What a recommendation costs beyond FastAPI itself: the service's route against `bench/constant_app.py`
(a FastAPI endpoint with the same path and a constant ten-item answer), one worker each, side by
side.

    python bench/constant_bench.py --model bench/out/model1m.pkl --users 1000000

wrk runs against the constant endpoint, then the service without filters, then with one
(language=en), and again, alternating, the start order rotated each time; the medians of each are
compared (goal: the service at least 0.8x the constant endpoint's requests per second, both ways).
The whole is done twice, the two servers started in one order and then in the other (the one started
second is often the faster here), and the geometric mean of both orders printed. Needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import numpy as np  # noqa: E402

from bench.common import ROOT, start_server, stop_server  # noqa: E402
from bench.serve_bench import require_wrk, write_catalog, wrk  # noqa: E402

KINDS = {"constant": ("constant", ""), "default": ("service", ""), "language=en": ("service", "?language=en")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/model1m.pkl", help="model file served")
    parser.add_argument("--users", type=int, default=1_000_000, help="viewers in the model (wrk's user ids)")
    parser.add_argument("--alternations", type=int, default=5, help="runs of each kind per start order")
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per run")
    args = parser.parse_args(argv)
    require_wrk()
    model = args.model.resolve()
    env = {**os.environ, "STREAMERS_PATH": str(write_catalog(model)), "LOG_LEVEL": "WARNING"}
    commands = {
        "constant": ["-m", "uvicorn", "bench.constant_app:app", "--log-level", "warning", "--workers", "1"],
        "service": ["platform.py", "--model", str(model), "--workers", "1"],
    }
    ratios: dict[str, list[float]] = {kind: [] for kind in KINDS if kind != "constant"}
    medians: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for order in (("constant", "service"), ("service", "constant")):
        servers = {}
        try:
            for name in order:
                servers[name] = start_server(commands[name], env=env)
            for _, base in servers.values():
                wrk(base, 2, users=args.users)  # warm-up
            runs: dict[str, list[float]] = {kind: [] for kind in KINDS}
            kinds = list(KINDS)
            for i in range(args.alternations):
                for kind in kinds[i % 3 :] + kinds[: i % 3]:
                    name, query = KINDS[kind]
                    runs[kind].append(wrk(servers[name][1], args.seconds, query, args.users)["rps"])
        finally:
            for proc, _ in servers.values():
                stop_server(proc)
        for kind, rps in runs.items():
            medians[kind].append(statistics.median(rps))
        for kind in ratios:
            ratios[kind].append(medians[kind][-1] / medians["constant"][-1])
        print(f"started {' then '.join(order)}: " + ", ".join(f"{k} {medians[k][-1]:.0f} req/s" for k in KINDS))
    result = {kind: round(float(np.exp(np.mean(np.log(r)))), 3) for kind, r in ratios.items()}
    for kind, ratio in result.items():
        orders = ", ".join(f"{r:.3f}" for r in ratios[kind])
        print(f"service {kind} / constant endpoint: {ratio:.3f}x (the two orders {orders}; goal >= 0.8x)")
    print(json.dumps({"req_per_s": medians, "ratio": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

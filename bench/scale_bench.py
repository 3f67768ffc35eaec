"""A million viewers on one box: training, startup, memory and serving in one run.

    python bench/scale_bench.py                    # 1M viewers; generates the log on first use
    python bench/scale_bench.py --users 100000     # the same report at the public sample's size

The log is `demo_data.py --users 1000000 --no-header` (about 29.5M
sessions, 1.33M streamers with a session, 15M viewer-streamer pairs: the public file's shape, ten
times larger), generated once into bench/out/. Then, in this one run:
- reading: `sessions.read_sessions` next to a bare pandas `read_csv(engine="pyarrow")` (read_bench.py);
- training: `als_fit.py` end to end next to the bare pipeline, alternating, wall time and peak
  memory of each (train_bench.py);
- serving: `load_model` in a fresh process; `platform.py` with 1 and 2 workers next to a constant
  FastAPI endpoint under wrk (90% known viewers), each with the time until /health answers, and
  the resident and private memory of every worker after the load (serve_bench.py); then the
  same serving figures for the 100k log, the size the service was first tuned at.

Goals at 1M viewers: training at most 1.25x the bare pipeline with peak memory at most 6 GB;
load_model under 1 s; /health within 10 s with 2 workers; at most 400 MB private per worker;
throughput and p99 within 10% of the 100k figures, 0 errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench import read_bench, serve_bench, train_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000, help="viewers in the generated log")
    parser.add_argument("--seconds", type=float, default=20, help="wrk duration per run")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each, best kept")
    args = parser.parse_args(argv)
    print(f"== reading, {args.users:,} viewers")
    read_bench.main(["--users", str(args.users), "--repeat", "2"])
    print(f"== training, {args.users:,} viewers")
    training = train_bench.run(args.users, args.repeat)
    print(f"== serving, {args.users:,} viewers")
    serving = {args.users: serve_bench.run(args.users, args.seconds, args.repeat)}
    if args.users != 100_000:
        print("== serving, 100,000 viewers (the reference)")
        serving[100_000] = serve_bench.run(100_000, args.seconds, args.repeat)
        for workers in (1, 2):
            big, ref = serving[args.users]["runs"][workers]["service"], serving[100_000]["runs"][workers]["service"]
            print(
                f"workers {workers}: {args.users:,} viewers at {big['rps'] / ref['rps']:.2f}x the requests/s "
                f"and {big['p99_ms'] / ref['p99_ms']:.2f}x the p99 of 100,000 (goal: within 10%)"
            )
    print(json.dumps({"training": training, "serving": serving}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

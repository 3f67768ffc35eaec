"""Reading and validating sessions next to a bare pandas `read_csv(engine="pyarrow")` of the file.

    python bench/read_bench.py                   # the 100k log (train_bench.py makes it)
    python bench/read_bench.py --users 1000000   # the 1M log

Alternating, in this one process, best of `--repeat`. Goal: `sessions.read_sessions` at most 2x
the bare read, with every drop rule and error message of the careful path kept.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

import pandas as pd  # noqa: E402

from bench.train_bench import ensure_data  # noqa: E402
from streamrec.data.sessions import COLUMNS, read_sessions  # noqa: E402


def timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    out = fn()
    took = time.perf_counter() - t
    del out
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="viewers of the benchmark log")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each, best kept")
    args = parser.parse_args(argv)
    path = ensure_data(args.users)
    bare, ours = [], []
    for _ in range(args.repeat):
        bare.append(timed(lambda: pd.read_csv(path, header=None, names=list(COLUMNS), engine="pyarrow")))
        ours.append(timed(lambda: read_sessions(path)))
    b, o = min(bare), min(ours)
    print(f"{path}: bare pandas+pyarrow read {b:.2f} s, read_sessions {o:.2f} s, ratio {o / b:.2f}x (goal <= 2x)")
    print(json.dumps({"users": args.users, "bare_s": round(b, 2), "ours_s": round(o, 2), "ratio": round(o / b, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

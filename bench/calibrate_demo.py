"""The demo generator against the real public Twitch 100k file, statistic by statistic.

    python bench/calibrate_demo.py                 # seeds 42, 1, 2 at the 100k size
    python bench/calibrate_demo.py --seeds 42

The real column is `streamrec.data.demo.TWITCH_100K`; when `../shared/data/twitch100k-marginals/` is
beside the project, it is recomputed from those complete marginals first, and any difference is
an error. Prints a Markdown table (docs/training.md's), one column per seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # platform.py hands over the standard module

import pandas as pd  # noqa: E402

from streamrec.data import demo as demo_data  # noqa: E402

MARGINALS = ROOT.parent / "shared" / "data" / "twitch100k-marginals"


def real_from_marginals(folder: Path) -> dict[str, float]:
    """The statistics both marginals determine, from the files themselves."""
    viewers = pd.read_csv(folder / "streamer_distinct_viewers.csv")["distinct_viewers"].to_numpy()
    sessions = pd.read_csv(folder / "user_sessions_and_watch_steps.csv")["sessions"].to_numpy()
    return demo_data.curve_statistics(viewers, sessions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="viewers to generate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="generator seeds")
    args = parser.parse_args(argv)

    real = demo_data.TWITCH_100K
    if MARGINALS.exists():
        measured = real_from_marginals(MARGINALS)
        wrong = {k: (real[k], v) for k, v in measured.items() if real[k] != v}
        if wrong:
            print(f"error: demo_data.TWITCH_100K differs from {MARGINALS}: {wrong}", file=sys.stderr)
            return 1
        print(f"reference checked against {MARGINALS}")
    columns = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        columns.append(demo_data.summary(demo_data.generate(args.users, seed=seed)))
        print(f"seed {seed}: generated and summarised in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print()
    print("| statistic | real 100k | " + " | ".join(f"demo, seed {s}" for s in args.seeds) + " |")
    print("| --- | --- |" + " --- |" * len(args.seeds))
    for key, value in real.items():
        cells = [f"{c[key]:,}" if isinstance(c[key], int) else f"{c[key]:g}" for c in columns]
        shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
        print(f"| {key} | {shown} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the most popular streamers of a sessions file: the list for viewers the model does not know.

    python cold_start.py data/demo_sessions.csv --by viewers --window 0.25 -k 10

The popularity itself is `streamrec.model.popular`.
"""

from __future__ import annotations

import argparse
import sys

from streamrec.data.sessions import DataError, read_sessions
from streamrec.model.popular import POPULARITY_BY, PopularityRecommender

__all__ = ["POPULARITY_BY", "PopularityRecommender", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the most popular streamers of a sessions file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data", help="sessions CSV")
    parser.add_argument("--by", choices=POPULARITY_BY, default="viewers", help="popularity measure")
    parser.add_argument("--window", type=float, default=1.0, help="recent fraction of the time span, (0, 1]")
    parser.add_argument("-k", type=int, default=10, help="how many streamers")
    args = parser.parse_args(argv)
    try:
        sessions = read_sessions(args.data)
        pop = PopularityRecommender(args.by, args.window).fit(sessions.frame, sessions.time_format)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rank, (name, score) in enumerate(pop.recommend_names(args.k), 1):
        print(f"{rank:3d}  {name}  {score:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

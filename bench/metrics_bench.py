"""Ranking metrics on 100k users at k=10, each next to a bare set-membership loop.

    python bench/metrics_bench.py

Random relevant sets (1-20 of 5,000 streamers) and ranked lists of 10, the shape of an offline
evaluation at Twitch-100k scale. The baseline is the least any implementation does: one Python
pass that tests each prediction against its user's set. Goal: each metric under 1 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from streamrec.evaluate import metrics  # noqa: E402


def main() -> int:
    rng = np.random.default_rng(0)
    n, k = 100_000, 10
    actual = [set(rng.integers(0, 5000, rng.integers(1, 21)).tolist()) for _ in range(n)]
    predicted = rng.integers(0, 5000, (n, k)).tolist()

    t = time.perf_counter()
    hits = sum(p in a for a, ranked in zip(actual, predicted, strict=True) for p in ranked)
    baseline = time.perf_counter() - t
    print(f"{n:,} users, k={k}; baseline membership loop {baseline:.3f} s ({hits:,} hits)")
    for f in (
        metrics.map_at_k,
        metrics.ndcg_at_k,
        metrics.precision_at_k,
        metrics.recall_at_k,
        metrics.hit_rate_at_k,
        metrics.mrr_at_k,
    ):
        t = time.perf_counter()
        value = f(actual, predicted, k)
        seconds = time.perf_counter() - t
        print(f"{f.__name__:<15} {seconds:.3f} s ({seconds / baseline:.1f}x baseline)  value {value:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The baseline the trainer is measured against: the least a pipeline must do, nothing more.

    python bench/bare_pipeline.py bench/out/twitch100k.csv

pyarrow read (headerless Twitch layout, the obvious engine), groupby per (user, streamer), CSR,
implicit's CPU ALS at 64 factors and 15 iterations with BLAS at one thread, pickle. Prints one
JSON line with the seconds of each step.
"""

from __future__ import annotations

import json
import pickle
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits


def main(path: str) -> None:
    steps: dict[str, float] = {}
    t = time.perf_counter()
    frame = pd.read_csv(
        path, header=None, names=["uid", "session_id", "streamer_name", "time_start", "time_end"], engine="pyarrow"
    )
    steps["read"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs = frame.groupby(["uid", "streamer_name"], sort=False).size()
    steps["groupby"] = time.perf_counter() - t
    t = time.perf_counter()
    users, user_ids = pd.factorize(pairs.index.get_level_values(0))
    items, item_ids = pd.factorize(pairs.index.get_level_values(1))
    matrix = sp.csr_matrix((pairs.to_numpy(np.float32), (users, items)), shape=(len(user_ids), len(item_ids)))
    steps["csr"] = time.perf_counter() - t
    t = time.perf_counter()
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=64, iterations=15, random_state=42)
        als.fit(matrix, show_progress=False)
    steps["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryFile() as f:
        pickle.dump((als, np.asarray(user_ids), np.asarray(item_ids)), f, protocol=5)
    steps["pickle"] = time.perf_counter() - t
    print(json.dumps({k: round(v, 3) for k, v in steps.items()}))


if __name__ == "__main__":
    main(sys.argv[1])

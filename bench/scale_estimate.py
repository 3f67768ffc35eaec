"""What a model file weighs at another size, from a measured one: each array scaled by what it
grows with (viewers, viewer-streamer pairs, streamers, or nothing).

    python bench/scale_estimate.py bench/out/model100k-spark.pkl          # to the full Twitch log
    python bench/scale_estimate.py MODEL --viewers 15.5e6 --streamers 465e3 --pairs 233e6

Defaults are the full public Twitch log: 15.5M viewers, 465k streamers, and 233M viewer-streamer
pairs (the 100k file is a sample of its viewers, with 15.05 pairs each: 1,505,158 pairs for
100,000 viewers). The id maps' string blobs scale with the mean id length the model file holds.
Also prints what the Spark engine's driver collects, array by array (SCALE.md).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from streamrec.model.model_file import MAGIC  # noqa: E402

# Which count each array's first dimension follows.
UNIT = {
    "user_factors": "viewers",
    "best_als": "viewers",
    "history.indptr": "viewers",
    "users.blob": "viewers",
    "users.offsets": "viewers",
    "users.keys": "viewers",
    "users.order": "viewers",
    "lists.all.ids": "viewers",
    "lists.all.scores": "viewers",
    "lists.new.ids": "viewers",
    "lists.new.scores": "viewers",
    "history.indices": "pairs",
    "history.count": "pairs",
    "history.watch_time": "pairs",
    "history.last_seen": "pairs",
    "history.bonus": "pairs",
    "history.live_bonus": "pairs",
    "item_factors": "streamers",
    "popularity": "streamers",
    "popular_ranking": "streamers",
    "streamer_json.blob": "streamers",
    "streamer_json.offsets": "streamers",
    "streamers.blob": "streamers",
    "streamers.offsets": "streamers",
    "streamers.keys": "streamers",
    "streamers.order": "streamers",
    "catalog": "constant",
}
# What the Spark engine's driver collects from the executors to write the file (the rest it builds
# from the collected ids, or it is the item side it holds anyway).
COLLECTED = {k for k, unit in UNIT.items() if unit in ("viewers", "pairs") and not k.startswith("users.")}


def header(path: Path) -> dict:
    with open(path, "rb") as f:
        if f.read(8) != MAGIC:
            raise SystemExit(f"{path}: not a model file")
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--viewers", type=float, default=15.5e6)
    parser.add_argument("--streamers", type=float, default=465e3)
    parser.add_argument("--pairs", type=float, default=233e6)
    args = parser.parse_args(argv)
    h = header(args.model)
    arrays = h["arrays"]
    measured = {
        "viewers": arrays["user_factors"]["shape"][0],
        "streamers": arrays["item_factors"]["shape"][0],
        "pairs": arrays["history.indices"]["shape"][0],
        "constant": 1,
    }
    target = {"viewers": args.viewers, "streamers": args.streamers, "pairs": args.pairs, "constant": 1}
    total_now = total_then = collected_then = 0.0
    for name, spec in arrays.items():
        unit = UNIT.get(name)
        if unit is None:
            raise SystemExit(f"{name}: no unit known for this array; add it to UNIT")
        size = 1
        for d in spec["shape"]:
            size *= d
        nbytes = size * {"uint8": 1, "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "float64": 8}[spec["dtype"]]
        then = nbytes * target[unit] / measured[unit]
        if name == "history.indptr" and spec["dtype"] == "int32" and args.pairs >= 2**31:
            then *= 2  # int64 offsets past 2^31 pairs
        total_now += nbytes
        total_then += then
        collected_then += then if name in COLLECTED else 0.0
        print(f"{name:22s} {unit:9s} {nbytes / 1e6:10.1f} MB -> {then / 1e9:8.2f} GB")
    print(f"measured file: {args.model.stat().st_size / 1e9:.3f} GB (arrays {total_now / 1e9:.3f} GB); ", end="")
    print({k: f"{v:,}" for k, v in measured.items() if k != "constant"})
    print(
        f"at {args.viewers:,.0f} viewers, {args.streamers:,.0f} streamers, {args.pairs:,.0f} pairs: "
        f"file {total_then / 1e9:.1f} GB, of which the Spark driver collects {collected_then / 1e9:.1f} GB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

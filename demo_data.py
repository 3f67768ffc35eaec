"""Generate realistic viewing sessions, deterministically, so the product runs without real data.

    python demo_data.py --out data/demo_sessions.csv                    # the built-in demo
    python demo_data.py --users 100000 --no-header --out twitch100k.csv  # Twitch-100k sized

The public Twitch dataset is research-only, so the project never ships it; this generator mimics
the statistics `DOMAIN.md` gives for it:
- time in 10-minute steps over 43 days (6,148 steps), a daily cycle peaking about 2.2x;
- sessions per user lognormal (mu 2.93, sigma 0.96 on ln), clipped to 5..327;
- heavy-tailed streamer popularity (Zipf weights), most streamers with very few viewers;
- taste communities: each viewer mostly discovers streamers of one or two communities, and each
  community streams at its own hours;
- repeat viewing: each new session copies an earlier one of the same viewer (a Polya urn, biased
  to recent sessions) with a probability that grows with the viewer's history, so about half of
  all sessions are repeats and most late sessions are;
- session lengths with median 1 step and mean about 3 steps, always inside the streamer's slot.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sessions import COLUMNS

log = logging.getLogger("demo_data")

STEPS_PER_DAY = 144  # 10-minute steps
DAYS = 43
# Cumulative shares of a viewer's discoveries: primary community, secondary community, the global
# popularity charts, and the rest uniformly over the whole catalog (the one-viewer long tail).
P_PRIMARY, P_SECONDARY, P_CHARTS = 0.66, 0.80, 0.88


def _streamer_names(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unique, pronounceable, deterministic names such as 'kamirotv' or 'zelunagg3'."""
    syllables = np.array([c + v for c in "bdfgklmnprstvz" for v in "aeiou"])
    suffixes = np.array(["", "", "", "tv", "gg", "_live", "plays", "x"])
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        k = rng.integers(2, 4)
        name = "".join(rng.choice(syllables, k)) + str(rng.choice(suffixes))
        if name in seen:
            name = f"{name}{len(names)}"
        seen.add(name)
        names.append(name)
    return np.array(names)


def _daily_cycle_hour(rng: np.random.Generator, size: int, centre: np.ndarray) -> np.ndarray:
    """Start hours scattered around each streamer's community prime time."""
    return (centre + rng.normal(0.0, 5.0, size)).round().astype(int) % 24


def generate(
    n_users: int = 8000,
    streamers_per_user: float = 4.0,
    n_communities: int = 60,
    zipf_exponent: float = 1.3,
    seed: int = 42,
) -> pd.DataFrame:
    """Return a sessions frame with the five standard columns, sorted by uid and time."""
    rng = np.random.default_rng(seed)
    n_streamers = max(50, int(n_users * streamers_per_user))

    # Streamers: community, popularity weight (Zipf by a random rank), daily slot.
    community = rng.integers(0, n_communities, n_streamers)
    rank = rng.permutation(n_streamers) + 1
    weight = 1.0 / (rank + 2.0) ** zipf_exponent
    # Prime time of each community, drawn from a daily cycle that peaks in the evening at about
    # 2.2x its trough; each streamer streams around its community's prime time.
    hours = np.arange(24)
    cycle = 1.0 + 0.6 * (1.0 + np.cos(2 * np.pi * (hours - 20) / 24))
    prime = rng.choice(24, n_communities, p=cycle / cycle.sum()).astype(float)
    slot_hour = _daily_cycle_hour(rng, n_streamers, prime[community])
    slot_len = rng.integers(12, 49, n_streamers)  # 2 to 8 hours, in steps

    # Per community: streamers and cumulative weights, for sampling "new" streamers.
    order = np.argsort(community, kind="stable")
    bounds = np.searchsorted(community[order], np.arange(n_communities + 1))
    # Within a community, discovery is flatter than the global popularity curve.
    comm_cum = [np.cumsum(weight[order[a:b]] ** 0.8) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    comm_members = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    global_cum = np.cumsum(weight)
    comm_weight = np.array([c[-1] if len(c) else 0.0 for c in comm_cum])

    # Users: session count, communities, appetite for novelty, first active day.
    n_sess = np.clip(np.exp(rng.normal(2.93, 0.96, n_users)).round(), 5, 327).astype(np.int64)
    primary = rng.choice(n_communities, n_users, p=comm_weight / comm_weight.sum())
    secondary = rng.integers(0, n_communities, n_users)
    novelty = rng.beta(2.0, 2.5, n_users)
    first_day = rng.uniform(0, DAYS - 8, n_users)

    offsets = np.concatenate([[0], np.cumsum(n_sess)])
    total = int(offsets[-1])
    choice = np.empty(total, np.int64)

    def sample_new(users: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), np.int64)
        u = rng.random(len(users))
        # Where discovery comes from: own communities, the global charts, or anywhere at all.
        comm = np.where(u < P_PRIMARY, primary[users], np.where(u < P_SECONDARY, secondary[users], -1))
        glob = comm < 0
        out[glob] = np.searchsorted(global_cum, rng.random(glob.sum()) * global_cum[-1])
        anywhere = u >= P_CHARTS
        out[anywhere] = rng.integers(0, n_streamers, anywhere.sum())
        for c in np.unique(comm[~glob]):
            idx = np.flatnonzero(comm == c)
            if len(comm_cum[c]) == 0:
                out[idx] = np.searchsorted(global_cum, rng.random(len(idx)) * global_cum[-1])
                continue
            pick = np.searchsorted(comm_cum[c], rng.random(len(idx)) * comm_cum[c][-1])
            out[idx] = comm_members[c][np.minimum(pick, len(comm_members[c]) - 1)]
        return np.minimum(out, n_streamers - 1)

    # The urn, one session index at a time, vectorised over users.
    for j in range(int(n_sess.max())):
        users = np.flatnonzero(n_sess > j)
        pos = offsets[users] + j
        if j == 0:
            choice[pos] = sample_new(users)
            continue
        p_new = np.maximum(0.1, novelty[users] * 3.0 / (1.0 + j / 10.0))
        new = rng.random(len(users)) < p_new
        choice[pos[new]] = sample_new(users[new])
        rep_users, rep_pos = users[~new], pos[~new]
        # Copy an earlier session: half uniformly (frequency), half among the last few (recency).
        uniform = rng.integers(0, j, len(rep_users))
        recent = np.maximum(0, j - 1 - rng.geometric(0.35, len(rep_users)) + 1)
        earlier = np.where(rng.random(len(rep_users)) < 0.5, uniform, recent)
        choice[rep_pos] = choice[offsets[rep_users] + earlier]

    # Times: each user's sessions fall on sorted days after their first day, in the slot of the
    # streamer watched; lengths: 55% one step, else 1 + geometric (mean ~3 overall).
    user_of = np.repeat(np.arange(n_users), n_sess)
    day = first_day[user_of] + rng.random(total) * (DAYS - first_day[user_of])
    day = np.floor(np.sort(day + user_of * DAYS) - user_of * DAYS).astype(np.int64)
    day = np.clip(day, 0, DAYS - 1)
    slot_start = day * STEPS_PER_DAY + slot_hour[choice] * 6
    within = (rng.random(total) * slot_len[choice]).astype(np.int64)
    start = slot_start + within
    length = np.where(rng.random(total) < 0.55, 1, 1 + rng.geometric(0.22, total))
    end = np.minimum(start + length - 1, slot_start + slot_len[choice] - 1)
    horizon = DAYS * STEPS_PER_DAY - 1
    start, end = np.minimum(start, horizon), np.minimum(end, horizon)

    names = _streamer_names(n_streamers, rng)
    # Broadcast id, as in the Twitch file: one per streamer per day.
    session_id = 33_000_000_000 + choice * 64 + day
    frame = pd.DataFrame(
        {
            COLUMNS[0]: user_of + 1,
            COLUMNS[1]: session_id,
            COLUMNS[2]: names[choice],
            COLUMNS[3]: start,
            COLUMNS[4]: end,
        }
    )
    # Two picks of the same streamer on the same day can land on the same step: one session.
    frame = frame.drop_duplicates()
    return frame.sort_values([COLUMNS[0], COLUMNS[3]], kind="stable").reset_index(drop=True)


def write(frame: pd.DataFrame, out: Path, header: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False, header=header)
    tmp.replace(out)


def resolve(data: str | None, demo_path: str | Path) -> tuple[Path, str]:
    """(sessions path, label for the model's metadata): `data` when given, else the demo sessions
    at `demo_path`, generated the first time."""
    if data:
        return Path(data), str(data)
    path = Path(demo_path)
    if not path.exists():
        log.info("no data configured (DATA_PATH or --data): generating demo sessions at %s", path)
        write(generate(), path)
    return path, f"demo ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate deterministic demo viewing sessions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("data/demo_sessions.csv"), help="CSV to write")
    parser.add_argument("--users", type=int, default=8000, help="viewers (100000 = Twitch 100k)")
    parser.add_argument(
        "--streamers-per-user",
        type=float,
        default=4.0,
        help="catalog size per viewer (1.6 at 100k users gives the Twitch-100k catalog)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--no-header", action="store_true", help="write the headerless Twitch layout")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    frame = generate(args.users, args.streamers_per_user, seed=args.seed)
    write(frame, args.out, header=not args.no_header)
    print(f"wrote {len(frame):,} sessions of {args.users:,} users to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

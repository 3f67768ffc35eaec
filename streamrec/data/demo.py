"""Generate realistic viewing sessions, deterministically, so the product runs without real data.

    python -m streamrec.data.demo --out data/demo_sessions.csv                    # the built-in demo
    python -m streamrec.data.demo --users 100000 --no-header --out twitch100k.csv  # Twitch-100k sized

The public Twitch dataset is research-only, so the project never ships it; this generator is
calibrated against the complete real marginals of its 100k file (`TWITCH_100K`; the table in the
README and `bench/calibrate_demo.py` compare them statistic by statistic):
- sessions per viewer from the real quantile function (5 to 327, median 16, mean 30.5);
- streamer popularity: the real sorted curve of distinct viewers per streamer (top 1% of streamers
  hold 52.5% of viewer-streamer pairs, 55% have a single viewer);
- repeat viewing: a viewer with n sessions discovers about 1.23 n^0.75 streamers they never
  watched, mostly early in their history (the log starts in the middle of everyone's viewing, so
  habits show up as discoveries first); every other session copies an earlier one of the same
  viewer (a Polya urn, half uniform, half biased to recent sessions). So 50.7% of all sessions
  are repeats, and 78% of the pairs in the last 10% of the span, as in the real file;
- taste communities: each viewer discovers mostly within one or two communities, and each
  community streams at its own hours;
- time in 10-minute steps over 43 days (6,148 steps), a daily cycle peaking about 2.2x;
- session lengths with median 1 step and mean about 3 steps, always inside the streamer's slot.
The shape is calibrated at the 100k size; smaller logs (the 8,000-viewer demo) have flatter
heads, since a community has fewer viewers to share.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.data.sessions import COLUMNS
from streamrec.progress import progress

log = logging.getLogger("demo_data")

STEPS_PER_DAY = 144  # 10-minute steps
DAYS = 43

# Calibrated against the real marginals of the public Twitch 100k file (its sessions per viewer and
# viewers per streamer; TWITCH_100K below keeps the statistics, `bench/calibrate_demo.py` measures the fit):
# - sessions per user: the real quantile function, interpolated between these knots;
SESSION_QUANTILES = (
    (
        0.0,
        0.05,
        0.1,
        0.15,
        0.2,
        0.25,
        0.3,
        0.35,
        0.4,
        0.45,
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.9,
        0.95,
        0.98,
        0.99,
        0.995,
        0.999,
        1.0,
    ),
    (5, 5, 6, 6, 7, 8, 9, 11, 12, 14, 16, 19, 23, 27, 32, 39, 48, 60, 77, 105, 137, 160, 182, 228, 327),
)
# - streamer weights: Zipf-Mandelbrot in the rank's share q of the catalog, w = (q + OFFSET)^-EXPONENT,
#   falling faster (by q^-TAIL_EXTRA) past TAIL_START: fitted so that the distinct-viewer counts
#   drawn from these weights have the real curve (top 1% of streamers hold 52.5% of viewer-streamer
#   pairs, 55% of streamers have one viewer). Most of the catalog never gets a viewer, as on Twitch;
CATALOG_PER_USER = 5.3
ZIPF_EXPONENT, ZIPF_OFFSET, TAIL_START, TAIL_EXTRA = 1.084, 3.5e-5, 0.0223, 0.30
# - repeat viewing: how many streamers a viewer discovers, and how early: fitted so that 50.7% of
#   all sessions, and 78% of the viewer-streamer pairs after a time split at 90% of the span, are
#   repeats.
DISCOVERY_SCALE, DISCOVERY_POWER = 1.23, 0.75  # streamers a viewer discovers: scale * sessions^power
DISCOVERY_FRONT = 1.1  # how early in a history discoveries come: density (1 - position)^FRONT
FIRST_DAY_MEAN = 3.0  # days; most viewers are in the log from its first days
# Cumulative shares of a viewer's discoveries: primary community, secondary community; the rest
# come from the global charts. Every source samples by the same weights, so each streamer's share
# of all discoveries is its weight's share whatever the communities.
P_PRIMARY, P_SECONDARY = 0.66, 0.80


def _streamer_names(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unique, pronounceable, deterministic names such as 'kamirotv' or 'zelunagg3'. The draws are
    rng.choice's (a choice with replacement is integers(0, size)), made directly: at half a
    million names choice's own overhead was most of the demo log's generation."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    suffixes = ["", "", "", "tv", "gg", "_live", "plays", "x"]
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        k = rng.integers(2, 4)
        picked = rng.integers(0, len(syllables), k).tolist()
        name = "".join([syllables[i] for i in picked]) + suffixes[int(rng.integers(0, len(suffixes), dtype=np.int64))]
        if name in seen:
            name = f"{name}{len(names)}"
        seen.add(name)
        names.append(name)
    return np.array(names)


def _daily_cycle_hour(rng: np.random.Generator, size: int, centre: np.ndarray) -> np.ndarray:
    """Start hours scattered around each streamer's community prime time."""
    return (centre + rng.normal(0.0, 5.0, size)).round().astype(int) % 24


def streamer_weights(n_streamers: int) -> np.ndarray:
    """Discovery weight of the streamer at each popularity rank (best first)."""
    q = np.arange(1, n_streamers + 1) / n_streamers
    log_w = -ZIPF_EXPONENT * np.log(q + ZIPF_OFFSET) - TAIL_EXTRA * np.log(np.maximum(q / TAIL_START, 1.0))
    return np.exp(log_w - log_w.max())


def session_counts(n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Sessions per viewer, drawn from the real quantile function (5 to 327, median 16)."""
    probs, values = SESSION_QUANTILES
    return np.floor(np.interp(rng.random(n_users), probs, np.asarray(values) + 0.999)).astype(np.int64)


def _discoveries(n_sess: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which sessions discover a streamer, flat over all viewers' sessions in order. A viewer with
    n sessions discovers about DISCOVERY_SCALE * n^DISCOVERY_POWER streamers (fewer per session
    the more they watch), the first session always, the others early in the history: the log
    starts in the middle of everyone's viewing, so habits show up as discoveries first."""
    n_users, total = len(n_sess), int(n_sess.sum())
    want = DISCOVERY_SCALE * n_sess**DISCOVERY_POWER * rng.lognormal(0.0, 0.3, n_users)
    n_new = np.clip(np.round(want), 1, n_sess).astype(np.int64)
    user_of = np.repeat(np.arange(n_users), n_sess)
    index = np.arange(total) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
    position = index / n_sess[user_of]
    # Weighted sampling without replacement (Efraimidis-Spirakis): the largest keys u^(1/w).
    weight = np.maximum((1.0 - position) ** DISCOVERY_FRONT, 1e-12)
    key = np.where(index == 0, np.inf, np.log(rng.random(total)) / weight)
    order = np.lexsort((-key, user_of))  # each viewer's block keeps its place, largest key first
    rank = np.empty(total, np.int64)
    rank[order] = index
    return rank < n_new[user_of]


def generate(
    n_users: int = 8000,
    streamers_per_user: float = CATALOG_PER_USER,
    n_communities: int = 60,
    seed: int = 42,
) -> pd.DataFrame:
    """Return a sessions frame with the five standard columns, sorted by uid and time."""
    return _generate(n_users, streamers_per_user, n_communities, seed)[0]


def generate_with_catalog(
    n_users: int = 8000, streamers_per_user: float = CATALOG_PER_USER, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sessions as `generate` gives them, their streamer catalog as `streamer_catalog` gives it)."""
    frame, names, community = _generate(n_users, streamers_per_user, seed=seed)
    return frame, streamer_catalog(frame, names, community, seed)


def _generate(
    n_users: int = 8000,
    streamers_per_user: float = CATALOG_PER_USER,
    n_communities: int = 60,
    seed: int = 42,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(sessions, every streamer's name, every streamer's community)."""
    rng = np.random.default_rng(seed)
    n_streamers = max(50, int(n_users * streamers_per_user))

    # Streamers: community, popularity weight (by a random rank), daily slot.
    community = rng.integers(0, n_communities, n_streamers)
    weight = streamer_weights(n_streamers)[rng.permutation(n_streamers)]
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
    comm_cum = [np.cumsum(weight[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    comm_members = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    global_cum = np.cumsum(weight)
    comm_weight = np.array([c[-1] if len(c) else 0.0 for c in comm_cum])

    # Users: session count, communities (a community's viewers in proportion to its weight), which
    # sessions discover, first active day.
    n_sess = session_counts(n_users, rng)
    primary = rng.choice(n_communities, n_users, p=comm_weight / comm_weight.sum())
    secondary = rng.choice(n_communities, n_users, p=comm_weight / comm_weight.sum())
    is_new = _discoveries(n_sess, rng)
    first_day = np.minimum(rng.exponential(FIRST_DAY_MEAN, n_users), DAYS - 8)

    offsets = np.concatenate([[0], np.cumsum(n_sess)])
    total = int(offsets[-1])
    choice = np.empty(total, np.int64)

    def sample_new(users: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), np.int64)
        u = rng.random(len(users))
        # Where discovery comes from: own communities or the global charts.
        comm = np.where(u < P_PRIMARY, primary[users], np.where(u < P_SECONDARY, secondary[users], -1))
        glob = comm < 0
        out[glob] = np.searchsorted(global_cum, rng.random(glob.sum()) * global_cum[-1])
        for c in np.unique(comm[~glob]):
            idx = np.flatnonzero(comm == c)
            pick = np.searchsorted(comm_cum[c], rng.random(len(idx)) * comm_cum[c][-1])
            out[idx] = comm_members[c][np.minimum(pick, len(comm_members[c]) - 1)]
        return np.minimum(out, n_streamers - 1)

    seen: set[int] = set()  # user * n_streamers + streamer, for every pair watched so far

    def discover(users: np.ndarray) -> np.ndarray:
        """A streamer each of `users` has not watched yet (a few redraws, then whatever came)."""
        picks = sample_new(users)
        for _ in range(3):
            again = np.array([k in seen for k in (users * n_streamers + picks).tolist()], dtype=bool)
            if not again.any():
                break
            picks[again] = sample_new(users[again])
        seen.update((users * n_streamers + picks).tolist())
        return picks

    # The urn, one session index at a time, vectorised over users.
    with progress("demo sessions", total, "sessions") as bar:
        for j in range(int(n_sess.max())):
            users = np.flatnonzero(n_sess > j)
            pos = offsets[users] + j
            bar.update(len(users))
            if j == 0:
                choice[pos] = discover(users)
                continue
            new = is_new[pos]
            choice[pos[new]] = discover(users[new])
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
    horizon = DAYS * STEPS_PER_DAY - 1
    within = (rng.random(total) * slot_len[choice]).astype(np.int64)
    start = np.minimum(slot_start + within, horizon)
    # Two picks of the same streamer on the same day can land on the same step: move the later
    # one elsewhere in the slot.
    for attempt in range(6):
        key = pd.DataFrame({"u": user_of, "s": choice, "t": start})
        again = key.duplicated().to_numpy()
        if not again.any():
            break
        if attempt < 5:
            moved = slot_start[again] + (rng.random(again.sum()) * slot_len[choice[again]]).astype(np.int64)
            start[again] = np.minimum(moved, horizon)
        else:  # a slot cut short by the end of the log: the steps just before it
            start = start - key.groupby(["u", "s", "t"]).cumcount().to_numpy()
    length = np.where(rng.random(total) < 0.55, 1, 1 + rng.geometric(0.22, total))
    end = np.minimum(start + length - 1, slot_start + slot_len[choice] - 1)
    end = np.minimum(end, horizon)

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
    frame = frame.drop_duplicates()
    frame = frame.sort_values([COLUMNS[0], COLUMNS[3]], kind="stable").reset_index(drop=True)
    return frame, names, community


# The demo catalog: each community streams in one category and one language, as audiences do;
# English is most of it, as on Twitch.
CATEGORIES = (
    "Just Chatting", "League of Legends", "Fortnite", "Grand Theft Auto V", "Counter-Strike",
    "Minecraft", "Valorant", "World of Warcraft", "Dota 2", "Music", "Chess", "Art",
)  # fmt: skip
LANGUAGES = ("en",) * 6 + ("de", "es", "fr", "pt", "ru", "ko")


def streamer_catalog(frame: pd.DataFrame, names: np.ndarray, community: np.ndarray, seed: int = 42) -> pd.DataFrame:
    """The streamer catalog (streamer_name, category, language) of the streamers in `frame` (each
    of `names` in its `community`): a category and a language per community, drawn apart from the
    sessions' random stream."""
    rng = np.random.default_rng(seed + 1)
    n = int(community.max()) + 1
    category = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)]
    language = np.array(LANGUAGES)[rng.integers(0, len(LANGUAGES), n)]
    # A hash lookup: np.isin on arrays of strings compares every name with every other (hours at 1M).
    seen = pd.Index(names).isin(frame[COLUMNS[2]].unique())
    return pd.DataFrame(
        {"streamer_name": names[seen], "category": category[community[seen]], "language": language[community[seen]]}
    )


def catalog_path(sessions: str | Path) -> Path:
    """Where the demo catalog of demo sessions at `sessions` is written."""
    sessions = Path(sessions)
    stem = (
        sessions.stem.replace("sessions", "streamers") if "sessions" in sessions.stem else f"{sessions.stem}_streamers"
    )
    return sessions.with_name(stem + ".csv")


# The same statistics of the real public 100k file, from its complete marginals
# and the repeat share of a real Twitch sample (78% of late viewing is of streamers watched before).
REAL_SHARES = (0.811, 0.875, 0.908, 0.930, 0.946, 0.957, 0.968, 0.978, 0.989)  # held by the top 10%, ..., 90%
REAL_SESSION_DECILES = (6.0, 7.0, 9.0, 12.0, 16.0, 23.0, 32.0, 48.0, 77.0)
TWITCH_100K = {
    "users": 100_000,
    "streamers": 162_625,
    "sessions": 3_051_733,
    "pairs": 1_505_158,
    "repeat_share": 0.507,
    "one_viewer_share": 0.551,
    "top_0.1%_share": 0.233,
    "top_1%_share": 0.525,
    **dict(zip((f"top_{d}%_share" for d in range(10, 100, 10)), REAL_SHARES, strict=True)),
    "largest_audience": 17_154,
    **dict(zip((f"sessions_p{d}" for d in range(10, 100, 10)), REAL_SESSION_DECILES, strict=True)),
    "sessions_p99": 160.0,
    "sessions_top_1%_share": 0.062,
    "test_pairs_repeat_share": 0.78,
    "next_session_repeat_share": 0.67,
}


def summary(frame: pd.DataFrame) -> dict[str, float]:
    """The statistics the generator is calibrated on, for any sessions frame: the sorted curve of
    distinct viewers per streamer (share of viewer-streamer pairs held by its top 0.1%, 1%, 10%,
    ..., 90%), the sessions-per-viewer deciles, and the share of sessions with an already-watched
    streamer, overall and after a time split."""
    uid, streamer = frame[COLUMNS[0]].to_numpy(), frame[COLUMNS[2]].to_numpy()
    pairs = pd.DataFrame({"u": uid, "s": streamer}).drop_duplicates()
    out = curve_statistics(pairs.groupby("s").size().to_numpy(), pd.Series(uid).value_counts().to_numpy())
    out["repeat_share"] = round(1 - len(pairs) / len(frame), 3)
    out.update(_test_period_repeats(frame))
    return {key: out[key] for key in TWITCH_100K}


def curve_statistics(viewers: np.ndarray, sessions: np.ndarray) -> dict[str, float]:
    """What the two marginals say: from every streamer's distinct viewers and every viewer's
    sessions (any order), the sizes, the streamer curve and the sessions curve."""
    viewers, sessions = np.sort(viewers)[::-1], np.sort(sessions)[::-1]
    held = np.cumsum(viewers) / viewers.sum()

    def top(share: float) -> float:
        return round(float(held[int(np.ceil(share * len(viewers))) - 1]), 3)

    return {
        "users": len(sessions),
        "streamers": len(viewers),
        "sessions": int(sessions.sum()),
        "pairs": int(viewers.sum()),
        "one_viewer_share": round(float(np.mean(viewers == 1)), 3),
        "top_0.1%_share": top(0.001),
        "top_1%_share": top(0.01),
        **{f"top_{d}%_share": top(d / 100) for d in range(10, 100, 10)},
        "largest_audience": int(viewers[0]),
        **{f"sessions_p{d}": float(np.quantile(sessions, d / 100)) for d in range(10, 100, 10)},
        "sessions_p99": float(np.quantile(sessions, 0.99)),
        "sessions_top_1%_share": round(float(sessions[: max(1, len(sessions) // 100)].sum() / sessions.sum()), 3),
    }


def _test_period_repeats(frame: pd.DataFrame, fraction: float = 0.1) -> dict[str, float]:
    """For viewers seen before the last `fraction` of the span: the share of their (viewer,
    streamer) pairs after it that they had watched before it, and the same for their first
    session after it (the evaluation's two kinds of target)."""
    start = frame[COLUMNS[3]].to_numpy()
    cut = int(np.ceil(start.max() - fraction * (start.max() - start.min())))
    codes = pd.factorize(frame[COLUMNS[2]])[0].astype(np.int64)
    uid = pd.factorize(frame[COLUMNS[0]])[0].astype(np.int64)
    key = uid * (codes.max() + 1) + codes
    before, after = start < cut, start >= cut
    known = np.isin(uid, uid[before]) & after
    pairs = np.unique(key[known])
    order = np.lexsort((start[known], uid[known]))
    first = key[known][order][np.r_[True, np.diff(uid[known][order]) != 0]] if known.any() else key[:0]
    watched = key[before]
    return {
        "test_pairs_repeat_share": round(float(np.isin(pairs, watched).mean()), 3) if len(pairs) else float("nan"),
        "next_session_repeat_share": round(float(np.isin(first, watched).mean()), 3) if len(first) else float("nan"),
    }


def write(frame: pd.DataFrame, out: Path, header: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    frame.to_csv(tmp, index=False, header=header)
    tmp.replace(out)


def resolve(data: str | None, demo_path: str | Path) -> tuple[Path, str]:
    """(sessions path, label for the model's metadata): `data` when given, else the demo sessions
    at `demo_path`, generated the first time with their streamer catalog beside them
    (`catalog_path`), which the service reads for a model trained on them."""
    if data:
        return Path(data), str(data)
    path = Path(demo_path)
    if not path.exists() or not catalog_path(path).exists():
        log.info("no data configured (DATA_PATH or --data): generating demo sessions at %s", path)
        t0 = time.perf_counter()
        frame, catalog = generate_with_catalog()
        if not path.exists():
            write(frame, path)
        write(catalog, catalog_path(path))
        log.info("demo sessions: %s rows written in %.1fs", f"{len(frame):,}", time.perf_counter() - t0)
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
        default=CATALOG_PER_USER,
        help="potential streamers per viewer (about 31%% of them get a viewer)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--no-header", action="store_true", help="write the headerless Twitch layout")
    parser.add_argument(
        "--catalog", action="store_true", help="also write the streamers' categories and languages beside it"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    frame, catalog = generate_with_catalog(args.users, args.streamers_per_user, seed=args.seed)
    write(frame, args.out, header=not args.no_header)
    if args.catalog:
        write(catalog, catalog_path(args.out))
    print(f"wrote {len(frame):,} sessions of {args.users:,} users to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

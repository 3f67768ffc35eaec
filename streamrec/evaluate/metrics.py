"""Ranking metrics with their conventions stated: `f(actual, predicted, k=10) -> float`.

    from streamrec.evaluate.metrics import map_at_k, ndcg_at_k
    ndcg_at_k({"u1": {"a", "b"}}, {"u1": ["a", "x", "b"]}, k=10)

Input, for every metric:
- two aligned sequences: `actual[i]` is the collection of relevant streamers of user i (any
  collection; order does not matter), `predicted[i]` that user's ranked list; or
- two mappings keyed by user: every user of `actual` counts, and a user missing from
  `predicted` has an empty list.

Shared conventions:
- only the first k predictions count;
- a streamer repeated in a prediction counts once, at its first rank (the repeat takes its slot
  but is never a hit);
- users with nothing relevant are left out of the mean; if no user is left, ValueError;
- the result is the mean over the remaining users.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

Actual = Sequence[Collection] | Mapping[object, Collection]
Predicted = Sequence[Sequence] | Mapping[object, Sequence]


def _hits(actual: Actual, predicted: Predicted, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(hits, n_relevant): hits[u, i] is True when rank i+1 of user u is a first-time hit."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    if isinstance(actual, Mapping):
        if not isinstance(predicted, Mapping):
            raise TypeError("actual is a mapping, so predicted must be a mapping keyed by user too")
        pairs = [(a, predicted.get(user, ())) for user, a in actual.items()]
    else:
        if isinstance(predicted, Mapping):
            raise TypeError("actual is a sequence, so predicted must be an aligned sequence too")
        if len(actual) != len(predicted):
            raise ValueError(f"actual and predicted must be aligned; got {len(actual)} and {len(predicted)} users")
        pairs = list(zip(actual, predicted, strict=True))
    hits = np.zeros((len(pairs), k), dtype=bool)
    n_relevant = np.zeros(len(pairs), dtype=np.int64)
    for u, (relevant, ranked) in enumerate(pairs):
        relevant = relevant if isinstance(relevant, set | frozenset | dict) else set(relevant)
        n_relevant[u] = len(relevant)
        if not relevant:
            continue
        seen = set()
        for i, item in enumerate(list(ranked)[:k]):
            if item in relevant and item not in seen:
                hits[u, i] = True
            seen.add(item)
    keep = n_relevant > 0
    if not keep.any():
        raise ValueError("no user has any relevant item, so the metric is undefined")
    return hits[keep], n_relevant[keep]


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def precision_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """Hits in the top k divided by k (not by the list length; implicit's "precision" divides by
    min(k, |actual|) instead, which is really a capped recall).

    Example: actual {a, b}, predicted [a, x, b], k=3: 2/3.
    """
    hits, _ = _hits(actual, predicted, k)
    return float(np.mean(hits.sum(axis=1) / k))


def recall_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """Hits in the top k divided by |actual|.

    Example: actual {a, b, c}, predicted [a, x, b], k=3: 2/3.
    """
    hits, n_rel = _hits(actual, predicted, k)
    return float(np.mean(hits.sum(axis=1) / n_rel))


def hit_rate_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """1 when at least one of the top k is relevant, else 0.

    Example: users ({a}, [x, a]) and ({b}, [x, y]), k=2: (1 + 0) / 2 = 0.5.
    """
    hits, _ = _hits(actual, predicted, k)
    return float(np.mean(hits.any(axis=1)))


def mrr_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """1 / rank of the first hit in the top k, 0 when there is none.

    Example: actual {b}, predicted [x, y, b], k=10: 1/3.
    """
    hits, _ = _hits(actual, predicted, k)
    first = np.argmax(hits, axis=1) + 1
    return float(np.mean(np.where(hits.any(axis=1), 1.0 / first, 0.0)))


def map_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """Mean average precision. AP@k = sum over hit ranks i <= k of precision@i, divided by
    min(k, |actual|): the divisor of implicit's `ranking_metrics_at_k`, Kaggle's `mapk` and Spark
    (RecTools divides by |actual| instead).

    Example: actual {a, b, c}, predicted [a, x, b], k=3: (1/1 + 2/3) / min(3, 3) = 5/9.
    """
    hits, n_rel = _hits(actual, predicted, k)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return float(np.mean((precision_at_i * hits).sum(axis=1) / np.minimum(k, n_rel)))


def ndcg_at_k(actual: Actual, predicted: Predicted, k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary gain: DCG = sum over hit ranks i of
    1 / log2(i + 1); the ideal DCG puts min(k, |actual|) hits at ranks 1.. (implicit's
    convention; RecTools' default divides by a constant instead).

    Example: actual {a, b}, predicted [x, a, b], k=3:
    (1/log2(3) + 1/log2(4)) / (1/log2(2) + 1/log2(3)) = 0.6934...
    """
    return float(np.mean(ndcg_per_user(actual, predicted, k)))


def ndcg_per_user(actual: Actual, predicted: Predicted, k: int = 10) -> np.ndarray:
    """NDCG@k of every user with something relevant, in input order: what `ndcg_at_k` averages,
    kept per user for paired comparisons (`paired_bootstrap`)."""
    hits, n_rel = _hits(actual, predicted, k)
    disc = _discounts(k)
    dcg = (hits * disc).sum(axis=1)
    ideal = np.cumsum(disc)[np.minimum(k, n_rel) - 1]
    return dcg / ideal


def hit_per_user(actual: Actual, predicted: Predicted, k: int = 10) -> np.ndarray:
    """1.0 or 0.0 per user with something relevant, in input order: what `hit_rate_at_k` averages."""
    hits, _ = _hits(actual, predicted, k)
    return np.asarray(hits.any(axis=1), dtype=np.float64)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """How sure is mean(a) - mean(b)? `a` and `b` are one metric of two methods on the same
    users (aligned). Users are resampled with replacement, both methods together, and the 2.5th
    and 97.5th percentiles of the resampled differences and ratios give 95% intervals.

    Example: a = [1, 1, 0, 1], b = [0, 1, 0, 1]: difference 0.25, ratio 1.5, with intervals
    around them (a resample without the first user has difference 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"a and b must be aligned, non-empty, one value per user; got {a.shape} and {b.shape}")
    mean_a, mean_b = _resampled_means(np.stack([a, b]), n_resamples, seed)
    diff = mean_a - mean_b
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mean_a / mean_b
    ratio = ratio[np.isfinite(ratio)]
    out = {
        "users": len(a),
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "difference": float(a.mean() - b.mean()),
        "difference_low": float(np.percentile(diff, 2.5)),
        "difference_high": float(np.percentile(diff, 97.5)),
        "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else float("nan"),
        "ratio_low": float(np.percentile(ratio, 2.5)) if len(ratio) else float("nan"),
        "ratio_high": float(np.percentile(ratio, 97.5)) if len(ratio) else float("nan"),
    }
    return out


def mean_interval(a: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) over users (percentiles of resampled means)."""
    a = np.asarray(a, dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan")
    (means,) = _resampled_means(a[None, :], n_resamples, seed)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of every row of `values` (methods x users) over `n_resamples` resamples of the
    users, the same resample for every row; in blocks, so memory stays small at any size."""
    rng = np.random.default_rng(seed)
    n = values.shape[1]
    out = np.empty((values.shape[0], n_resamples))
    block = max(1, 2_000_000 // n)
    for lo in range(0, n_resamples, block):
        picks = rng.integers(0, n, (min(block, n_resamples - lo), n))
        for row in range(values.shape[0]):
            out[row, lo : lo + len(picks)] = values[row][picks].mean(axis=1)
    return out


def catalog_coverage(predicted: Predicted, catalog_size: int, k: int = 10) -> float:
    """Share of the catalog that appears in at least one user's top k.

    Example: predicted [[a, b], [a, c]], catalog of 4, k=2: 3/4.
    """
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be positive; got {catalog_size}")
    lists = predicted.values() if isinstance(predicted, Mapping) else predicted
    shown = set()
    for ranked in lists:
        shown.update(list(ranked)[:k])
    return len(shown) / catalog_size

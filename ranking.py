"""The served ranking: candidates from a viewer's own history, ALS and popularity, scored by a
small logistic ranker whose weights are learned on a validation period.

Why: on live-streaming data most viewing is repeat viewing, so "the viewer's own most-watched
streamers" beats plain ALS, while ALS is far better than popularity at finding new streamers
(DOMAIN.md). The ranker puts both on one scale with features that are unit-free, so the same
weights work for integer steps and for timestamps:

- watched:        1 if the viewer watched the streamer before, else 0
- log_count:      log(1 + sessions with the streamer)
- count_share:    sessions with the streamer / all the viewer's sessions
- watch_share:    watch time with the streamer / all the viewer's watch time
- recency:        exp(-age / 5% of the log's span), age = time since last watched; 0 if never
- als:            the ALS score (user factors . streamer factors)
- als_rank:       log(1 + rank of the ALS score among this viewer's candidates): ALS scores are on
                  a different scale for every viewer, their order is not
- popularity:     log(1 + recent distinct viewers), scaled to [0, 1]

Two weight vectors are learned: `all` (the default ranking) and `new` (the discovery ranking
behind exclude_watched, trained on never-watched candidates only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize

FEATURES = ("watched", "log_count", "count_share", "watch_share", "recency", "als", "als_rank", "popularity")
RECENCY_SCALE = 0.05  # share of the log's time span over which recency decays by e
ALS_CANDIDATES = 100  # ALS candidates per viewer, on top of the viewer's history
POPULAR_CANDIDATES = 20  # popular candidates per viewer
L2 = 1.0  # ridge penalty of the logistic ranker, on standardised features


@dataclass
class RankerWeights:
    """A linear scorer on standardised features: score = ((x - mean) / scale) . coef + bias."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    bias: float
    learned: bool  # False when there was no validation period to learn from (prior weights)

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.bias

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "coef": self.coef.astype(np.float64),
            "bias": float(self.bias),
            "learned": bool(self.learned),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RankerWeights:
        return cls(
            np.asarray(d["mean"]), np.asarray(d["scale"]), np.asarray(d["coef"]), float(d["bias"]), bool(d["learned"])
        )

    @classmethod
    def prior(cls, discovery: bool = False) -> RankerWeights:
        """Used only when the validation period has nothing to learn from (a short log, or no
        viewer discovering anything in it). Weights on raw features: own history first, by
        sessions and recency (REP), then ALS; popularity only breaks ties. Discovery is ALS."""
        if discovery:
            coef = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1e-3])
        else:
            coef = np.array([10.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1e-3])
        return cls(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), coef, 0.0, False)


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> RankerWeights:
    """L2-regularised logistic regression on standardised features (L-BFGS on the exact loss)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    w = np.ones(len(y)) if weight is None else weight
    w = w / w.sum()
    signs = 2.0 * y - 1.0

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        margin = signs * (z @ params[:-1] + params[-1])
        # log(1 + exp(-m)) computed stably; d/dm = -sigmoid(-m)
        value = np.sum(w * np.logaddexp(0.0, -margin)) + 0.5 * L2 / len(y) * params[:-1] @ params[:-1]
        g = -w * signs / (1.0 + np.exp(margin))
        grad = np.concatenate([z.T @ g + L2 / len(y) * params[:-1], [g.sum()]])
        return value, grad

    result = scipy.optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return RankerWeights(mean, scale, result.x[:-1], float(result.x[-1]), True)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, best first (ties by index, so results are stable)."""
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]

"""Ranking metrics with their conventions stated (the code and docstrings: `streamrec.evaluate.metrics`).

from metrics import map_at_k, ndcg_at_k
ndcg_at_k({"u1": {"a", "b"}}, {"u1": ["a", "x", "b"]}, k=10)
"""

from streamrec.evaluate.metrics import (
    catalog_coverage,
    hit_per_user,
    hit_rate_at_k,
    map_at_k,
    mean_interval,
    mrr_at_k,
    ndcg_at_k,
    ndcg_per_user,
    paired_bootstrap,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "catalog_coverage",
    "hit_per_user",
    "hit_rate_at_k",
    "map_at_k",
    "mean_interval",
    "mrr_at_k",
    "ndcg_at_k",
    "ndcg_per_user",
    "paired_bootstrap",
    "precision_at_k",
    "recall_at_k",
]

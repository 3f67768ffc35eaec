"""Personalized "who to watch" lists for live-streaming platforms, from a log of viewing sessions.

    from streamrec import process_data, fit_model, load_model, personal_recommendations
    model = fit_model("sessions.csv")          # implicit ALS + a learned ranker
    personal_recommendations(model, user_id=42, k=10)

Subpackages by stage, each importing only from those before it: `data` (sessions, interactions,
catalog, demo log) -> `model` (arrays, ranker, scoring, popularity, the model file) -> `train`
(the recipe, updates, Spark) and `serve` (the HTTP service) -> `evaluate` (metrics, offline
protocols, tuning) -> `cli` (the commands). Importing this package reads no settings and starts
nothing; the founding names below load their modules on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "1.2.0"

if TYPE_CHECKING:
    from streamrec.data.interactions import process_data
    from streamrec.model.model_file import load_model
    from streamrec.model.scoring import personal_recommendations
    from streamrec.train.pipeline import fit_model

_FOUNDING = {
    "process_data": "streamrec.data.interactions",
    "fit_model": "streamrec.train.pipeline",
    "load_model": "streamrec.model.model_file",
    "personal_recommendations": "streamrec.model.scoring",
}

__all__ = ["__version__", "fit_model", "load_model", "personal_recommendations", "process_data"]


def __getattr__(name: str) -> Any:
    if name in _FOUNDING:
        return getattr(import_module(_FOUNDING[name]), name)
    raise AttributeError(f"module 'streamrec' has no attribute {name!r}")

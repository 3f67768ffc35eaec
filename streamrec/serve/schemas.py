"""The service's answers as pydantic models: what the OpenAPI schema shows. The hot routes write the
same JSON by hand (serve/serving.py); a test checks that each conforms."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Recommendation(BaseModel):
    streamer_name: str
    score: float = Field(description="higher is better; comparable within one response only")


class RecommendationResponse(BaseModel):
    user_id: str
    source: Literal["personal", "popular", "recent"] = Field(
        description="personal: ranked for a viewer the model knows; recent: ranked from the `recent` "
        "streamers of a viewer it does not know; popular: neither"
    )
    recommendations: list[Recommendation]


class SimilarResponse(BaseModel):
    streamer_name: str
    similar: list[Recommendation]


class LiveStatus(BaseModel):
    live: int = Field(description="live streamers the model knows")
    unknown: int = Field(description="published names the model does not know (left out)")
    since: str | None = Field(description="when this live set was published")
    categories: dict[str, int] = Field({}, description="live streamers per category, where it is known")
    languages: dict[str, int] = Field({}, description="live streamers per language, where it is known")


class Health(BaseModel):
    status: Literal["ok"]
    worker_pid: int = Field(description="the worker process that answered")
    model_loaded: bool
    created_at: str | None
    users: int
    streamers: int


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    created_at: str | None
    previous_created_at: str | None
    users: int
    streamers: int


class ErrorDetail(BaseModel):
    detail: str

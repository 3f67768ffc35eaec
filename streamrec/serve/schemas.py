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
    version: str | None = Field(
        description="the set's version: '<epoch>.<number>' from the store (REDIS_URL), 'file:<mtime>' without"
    )
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
    ready: bool = Field(description="the model's pages are in memory (GET /ready answers 200)")
    model_checksum: str | None = Field(description="the served model file's header checksum")
    fleet_model_checksum: str | None = Field(
        description="the model the fleet was last asked to serve (POST /admin/reload with REDIS_URL), if any"
    )
    live_version: str | None = Field(description="the live set served: '<epoch>.<number>' from the store, or file:")
    live_lists_ready: bool = Field(
        description="the live set's live-only lists are ranked (until then live-only requests are ranked on request)"
    )
    store: Literal["none", "up", "down"] = Field(description="the shared store (REDIS_URL): none set, answering, not")


class Ready(BaseModel):
    status: Literal["ready"]


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    created_at: str | None
    previous_created_at: str | None
    users: int
    streamers: int
    checksum: str | None = Field(description="the new model's header checksum")
    workers_notified: int | None = Field(
        description="with REDIS_URL: the workers (of every host) the reload message reached; else null"
    )


class Worker(BaseModel):
    instance: str
    pid: int
    ready: bool
    model_created_at: str | None
    model_checksum: str | None
    fleet_model_checksum: str | None
    live_version: str | None
    live_streamers: int
    live_lists_ready: bool
    seen_seconds_ago: float


class Fleet(BaseModel):
    workers: list[Worker] = Field(description="every worker of every host heard from in the last minute")
    lagging: list[str] = Field(
        description="instance/pid of the workers whose model or live set is not the newest the fleet has"
    )


class ErrorDetail(BaseModel):
    detail: str


class EventsAccepted(BaseModel):
    received: int = Field(description="sessions in the batch")
    accepted: int = Field(description="sessions written to the event log")
    dropped: dict[str, int] = Field(description="sessions dropped by the sessions file's rules, by reason")
    position: str | None = Field(description="the batch's position in the event log (null: nothing written)")


class EventsDeleted(BaseModel):
    user_id: str
    deleted: int = Field(description="the viewer's sessions deleted from the event log")

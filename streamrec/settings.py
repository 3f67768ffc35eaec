"""Service and trainer settings: one typed object read from the environment and `.env`.

    DATA_PATH=sessions.csv MODEL_PATH=models/model.pkl python als_fit.py

Every variable is listed with a safe value in `.env.example`. Names are case-insensitive,
so `data_path` and `DATA_PATH` both work. Each value is bounded; one that is not what its setting
takes stops the command with one line naming it (`get_settings` raises SettingsError).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_LENGTH = 16  # admin token: shorter ones are guessable; the service refuses to start with one


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line meant for a person."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Sessions CSV to train on; empty means "generate and use the built-in demo sessions".
    data_path: str = ""
    # The one model file: written by als_fit.py, read by the service at startup.
    model_path: Path = Path("models/model.pkl")
    # Where the demo sessions are written when data_path is empty.
    demo_data_path: Path = Path("data/demo_sessions.csv")
    # Streamer catalog CSV (streamer_name, category, language) for the category and language
    # filters; read at startup and on reload. Empty: only what live sets publish.
    streamers_path: str = ""
    # Bind address and port of `python platform.py`.
    host: Annotated[str, Field(min_length=1, max_length=255)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Uvicorn worker processes (1-64); they map the one model file and share its pages.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # Where the published live set is kept for every worker; empty: beside the model (.live.json).
    # Not used with REDIS_URL: the store holds it.
    live_path: str = ""
    # Bearer token for the admin endpoints; empty turns them off. Surrounding spaces are dropped;
    # the service refuses to start with one shorter than 16 characters.
    admin_token: Annotated[str, Field(max_length=4096)] = ""
    # Bearer token of POST /events, the platform's event pipeline (not an admin); empty turns
    # ingest off (a 404). At least 16 characters. Set on every host: a worker follows the event log
    # (EVENTS_PATH, or the store's stream with REDIS_URL) only when it is set.
    ingest_token: Annotated[str, Field(max_length=4096)] = ""
    # The event log without REDIS_URL: a folder of append-only segments, kept until an update
    # (`als_fit.py --update --events`) has taken them in. Outside models/, which `make clean` removes.
    events_path: Path = Path("events")
    # The event log's cap (MB on disk, or the stream's memory in the store): past it POST /events
    # answers 503 until an update takes the log in and trims it. Nothing a model lacks is dropped.
    events_max_mb: Annotated[int, Field(ge=1, le=1 << 20)] = 2048
    # Sessions in one POST /events batch, at most (past it: 422).
    events_batch_max: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    # How far past now (timestamps: seconds) or past the newest time known (integer steps: steps) a
    # session may end; later is a 422 (a time far ahead would shift every viewer's recency).
    events_skew: Annotated[int, Field(ge=0, le=1 << 40)] = 300
    # What a worker holds of the sessions not yet in its model: the last EVENTS_PER_VIEWER of a
    # viewer (1-1000), at most EVENTS_MAX_VIEWERS viewers (the longest quiet go first), each for
    # EVENTS_HOLD_HOURS after their last session came (an update takes them in before).
    events_per_viewer: Annotated[int, Field(ge=1, le=1000)] = 50
    events_max_viewers: Annotated[int, Field(ge=1, le=50_000_000)] = 1_000_000
    events_hold_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 48
    # Largest request body read, in bytes (1 KiB-1 GiB); larger ones get a 413 unread. A live set
    # of 100,000 streamers with long names, categories and viewer counts is about 14 MB of JSON.
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 32 * 1024 * 1024
    # Memory per worker for the streamers each category/language filter lets through, gathered
    # once (MB, 0-4096; 0 gathers per request). Least recently used filters are dropped first.
    filter_cache_mb: Annotated[int, Field(ge=0, le=4096)] = 32
    # category= and language= take at most this many comma-separated values (1-1000) of at most
    # this many characters (1-1024); past either, a 422 names the parameter.
    max_filter_values: Annotated[int, Field(ge=1, le=1000)] = 20
    max_filter_value_length: Annotated[int, Field(ge=1, le=1024)] = 128
    # GET /metrics (Prometheus) and the per-request counts behind it.
    metrics: bool = True
    # /docs and /redoc (their scripts are served by the service itself, never from a CDN).
    docs: bool = True
    # Spark master for `als_fit.py --engine spark` (ignored under spark-submit, which sets its own).
    spark_master: Annotated[str, Field(min_length=1, max_length=1024)] = "local[*]"
    # The shared store of a fleet of hosts (Redis 7 or Valkey): redis://[user:password@]host:port/db,
    # rediss:// for TLS. Empty: the live set and reloads go through files beside the model (one
    # host). The URL is never logged or shown: its password stays here.
    redis_url: Annotated[str, Field(max_length=4096)] = ""
    # Prefix of every key and channel in the store, so that several deployments share one server.
    redis_prefix: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")] = "streamrec:"
    # This host's name in GET /admin/fleet; empty: the machine's host name and PORT.
    instance_name: Annotated[str, Field(max_length=255, pattern=r"^[A-Za-z0-9_.:@-]*$")] = ""
    # Longest wait (seconds, 0-3600) for the model's pages to be read into memory before a worker
    # reports ready (GET /ready) or swaps in a reloaded model; 0: no wait.
    warm_seconds: Annotated[float, Field(ge=0, le=3600)] = 120
    # Python logging level of the service and the trainer.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Log lines as text (one format for every command and the server) or as JSON objects, one per
    # line, for a log collector.
    log_format: Literal["text", "json"] = "text"

    @field_validator("admin_token", "ingest_token", mode="before")
    @classmethod
    def _strip(cls, value):
        return value.strip() if isinstance(value, str) else value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if value and not value.startswith(("redis://", "rediss://")):
                raise ValueError("expected a URL starting redis:// or rediss:// (or empty: no store)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.strip().lower() if isinstance(value, str) else value


def live_file(settings: Settings) -> Path:
    return Path(settings.live_path) if settings.live_path else Path(settings.model_path).with_suffix(".live.json")


def public_url(url: str) -> str:
    """The URL as a message may show it: scheme, host, port and database, no user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the store (REDIS_URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def instance_name(settings: Settings) -> str:
    return settings.instance_name or f"{socket.gethostname()}:{settings.port}"


def get_settings(**overrides) -> Settings:
    """The settings from the environment and `.env`; raises SettingsError naming the first bad one."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None


SECRET = {"admin_token", "ingest_token", "redis_url"}  # never repeated in a message: a token, a password in a URL


def describe(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]).upper() if error["loc"] else "a setting"
    found = repr(error.get("input"))
    found = found if len(found) <= 60 else found[:57] + "..."
    if error["loc"] and str(error["loc"][0]).lower() in SECRET:
        found = f"a value of {len(str(error.get('input', '')))} characters (not shown)"
    more = len(exc.errors()) - 1
    return f"setting {name}: {error['msg']}; found {found}" + (f" ({more} more settings are wrong)" if more else "")


def check_service(settings: Settings) -> None:
    """What serving needs of the settings beyond their types (training does not need it): the
    admin and ingest tokens, if set, long enough not to be guessed. Raises SettingsError."""
    for name, value, off in (
        ("ADMIN_TOKEN", settings.admin_token, "admin endpoints off"),
        ("INGEST_TOKEN", settings.ingest_token, "POST /events off"),
    ):
        if value and len(value) < MIN_TOKEN_LENGTH:
            raise SettingsError(
                f"setting {name}: expected at least {MIN_TOKEN_LENGTH} characters (or empty: {off}); found {len(value)}"
            )

"""Service and trainer settings: one typed object read from the environment and `.env`.

    DATA_PATH=sessions.csv MODEL_PATH=models/model.pkl python als_fit.py

Every variable is listed with a safe value in `.env.example`. Names are case-insensitive,
so `data_path` and `DATA_PATH` both work.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


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
    host: str = "127.0.0.1"
    port: int = 8000
    # Uvicorn worker processes; they map the one model file and share its pages.
    workers: int = 1
    # Where the published live set is kept for every worker; empty: beside the model (.live.json).
    live_path: str = ""
    # Bearer token for the admin endpoints; empty turns them off.
    admin_token: str = ""
    # Largest request body read, in bytes; larger ones get a 413 unread. A live set of 100,000
    # streamers with long names, categories and viewer counts is about 14 MB of JSON.
    max_body_bytes: int = 32 * 1024 * 1024
    # GET /metrics (Prometheus) and the per-request counts behind it.
    metrics: bool = True
    # Spark master for `als_fit.py --engine spark` (ignored under spark-submit, which sets its own).
    spark_master: str = "local[*]"
    # Python logging level of the service and the trainer.
    log_level: str = "INFO"


def live_file(settings: Settings) -> Path:
    return Path(settings.live_path) if settings.live_path else Path(settings.model_path).with_suffix(".live.json")


def get_settings() -> Settings:
    return Settings()

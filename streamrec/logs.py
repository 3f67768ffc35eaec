"""One log format for every command and for the server, uvicorn's own lines included; or one JSON
object per line for a log collector (LOG_FORMAT=json).

    2026-11-30T13:40:00 INFO service model loaded: 8000 users, 15786 streamers, created ...
    {"time": "2026-11-30T13:40:00.123+00:00", "level": "INFO", "logger": "service", "message": "..."}

Configured by each command's `main` (never at import); `streamrec-serve` hands the same
configuration to uvicorn, which applies it in every worker.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
DATE = "%Y-%m-%dT%H:%M:%S"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (ISO 8601, UTC, milliseconds), level, logger, message and,
    when there is one, the exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """A `logging.config.dictConfig` configuration: one handler on stderr, in `fmt` ("text" or
    "json"), for the root logger; uvicorn's loggers hand their records to it."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    formatter: dict[str, Any] = (
        {"format": TEXT, "datefmt": DATE} if fmt == "text" else {"()": "streamrec.logs.JsonFormatter"}
    )
    passed_up = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": level, **passed_up} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(level: str, fmt: str = "text") -> None:
    logging.config.dictConfig(log_config(level, fmt))

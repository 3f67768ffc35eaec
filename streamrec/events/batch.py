"""One `POST /events` body: `{"sessions": [{uid, session_id, streamer_name, time_start, time_end}, ...]}`.

A malformed item (not an object, a field missing, a field of the wrong type, a time later than
allowed) makes the whole batch a `BatchInvalid` naming the item's index and field; nothing of it
is kept. Items the sessions file's reader would drop (a blank id, an unparseable time, an end
before the start, the same session twice) are dropped and counted by the same rules
(`sessions.clean_rows`'s, in plain Python: tests/events/test_batch.py checks both agree). Times
are in the model's format: whole numbers for a log in integer steps, ISO-8601 text for a log in
timestamps (kept as epoch seconds, as the file reader keeps them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from streamrec.data.sessions import COLUMNS, END, INTEGER, MAX_TIME, SESSION, START, STREAMER, UID

MAX_ERRORS = 10  # errors named in one 422; the rest are counted
MAX_ID_LENGTH = 1024  # characters of a uid, session id or streamer name


class BatchInvalid(ValueError):
    """The batch as a whole is refused (422); `errors` in FastAPI's shape of a validation error."""

    def __init__(self, errors: list[dict], more: int = 0):
        super().__init__(errors[0]["msg"] if errors else "invalid batch")
        self.errors = errors
        self.more = more


@dataclass
class Batch:
    """The usable sessions of one body, clean, in the model's time units."""

    uid: list[str]
    streamer: list[str]
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    received: int
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.uid)

    def rows(self) -> list[tuple[str, str, int, int]]:
        return list(zip(self.uid, self.streamer, self.start.tolist(), self.end.tolist(), strict=True))


def _error(loc: tuple, kind: str, msg: str, value) -> dict:
    shown = value if isinstance(value, int | float | bool | None) else str(value)[:100]
    return {"type": kind, "loc": ["body", *loc], "msg": msg, "input": shown}


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def parse_batch(body: bytes, time_format: str, latest: int, max_sessions: int) -> Batch:
    """The batch in `body`, checked item by item. `time_format`: the model's (INTEGER or ISO);
    `latest`: the latest time allowed (now, or the newest known time, plus the skew setting);
    `max_sessions`: items a batch may hold. Raises BatchInvalid."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BatchInvalid(
            [_error((), "json_invalid", f"expected a JSON object; found invalid JSON ({exc})", "")]
        ) from None
    if not isinstance(payload, dict) or "sessions" not in payload:
        found = f"an object with keys {sorted(payload)[:5]}" if isinstance(payload, dict) else _kind(payload)
        raise BatchInvalid([_error((), "missing", f'expected an object {{"sessions": [...]}}; found {found}', "")])
    items = payload["sessions"]
    if not isinstance(items, list):
        raise BatchInvalid([_error(("sessions",), "list_type", f"expected a list; found {_kind(items)}", items)])
    if len(items) > max_sessions:
        raise BatchInvalid(
            [
                _error(
                    ("sessions",),
                    "too_long",
                    f"expected at most {max_sessions:,} sessions in one batch (EVENTS_BATCH_MAX); found {len(items):,}",
                    len(items),
                )
            ]
        )
    iso = time_format != INTEGER
    errors: list[dict] = []
    columns: dict[str, list] = {c: [] for c in COLUMNS}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(_error(("sessions", i), "dict_type", f"expected an object; found {_kind(item)}", item))
            continue
        for name in COLUMNS:
            if name not in item:
                errors.append(_error(("sessions", i, name), "missing", "Field required", None))
                continue
            value = item[name]
            if name in (UID, SESSION, STREAMER):
                ok = isinstance(value, str) or (name != STREAMER and type(value) is int)
                if not ok:
                    wanted = "text" if name == STREAMER else "text or an integer"
                    errors.append(
                        _error(("sessions", i, name), "string_type", f"expected {wanted}; found {_kind(value)}", value)
                    )
                elif isinstance(value, str) and len(value) > MAX_ID_LENGTH:
                    errors.append(
                        _error(
                            ("sessions", i, name),
                            "too_long",
                            f"expected at most {MAX_ID_LENGTH} characters; found {len(value):,}",
                            value,
                        )
                    )
                else:
                    columns[name].append(str(value))
            elif iso:
                if isinstance(value, str) and len(value) <= 64:
                    columns[name].append(value)
                else:
                    errors.append(
                        _error(
                            ("sessions", i, name),
                            "string_type",
                            f"expected an ISO-8601 time as text, as the model's log has; found {_kind(value)}",
                            value,
                        )
                    )
            elif type(value) is int:
                columns[name].append(value)
            else:
                errors.append(
                    _error(
                        ("sessions", i, name),
                        "int_type",
                        f"expected a whole number, as the model's log has integer times; found {_kind(value)}",
                        value,
                    )
                )
        if len(errors) > MAX_ERRORS:
            break
    if errors:
        raise BatchInvalid(errors[:MAX_ERRORS], more=max(len(errors) - MAX_ERRORS, 0))
    return _clean(columns, iso, latest, len(items))


def _clean(columns: dict[str, list], iso: bool, latest: int, received: int) -> Batch:
    """The usable sessions by the sessions file's drop rules (`sessions.clean_rows`, whose pandas
    machinery costs 20 ms on a batch of 500: here the same rules in plain Python, tested equal on
    generated batches), in their order: blank uid, blank streamer_name, missing or unparseable time,
    time_end before time_start, duplicate session (the first kept)."""
    if iso:
        times = {}
        for name in (START, END):
            parsed = pd.to_datetime(pd.Series(columns[name], dtype=object), format="ISO8601", errors="coerce", utc=True)
            seconds = ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "s")).astype("float64")
            times[name] = [None if v != v else int(v) for v in seconds.tolist()]  # NaN: did not parse
    else:
        times = {name: columns[name] for name in (START, END)}
    for i, end in enumerate(times[END]):
        if end is not None and abs(end) <= MAX_TIME and end > latest:
            raise BatchInvalid(
                [
                    _error(
                        ("sessions", i, END),
                        "less_than_equal",
                        f"expected a time no later than {latest} (now, or the newest time known, plus "
                        f"EVENTS_SKEW); found {end}",
                        columns[END][i],
                    )
                ]
            )
    dropped: dict[str, int] = {}
    seen: set[tuple[str, str, int, int]] = set()
    uids, streamers, starts, ends = [], [], [], []
    for uid, streamer, start, end in zip(columns[UID], columns[STREAMER], times[START], times[END], strict=True):
        uid, streamer = uid.strip(), streamer.strip()
        if not uid:
            reason = "blank uid"
        elif not streamer:
            reason = "blank streamer_name"
        elif start is None or end is None or abs(start) > MAX_TIME or abs(end) > MAX_TIME:
            reason = "missing or unparseable time"
        elif end < start:
            reason = "time_end before time_start"
        elif (uid, streamer, start, end) in seen:
            reason = "duplicate session"
        else:
            seen.add((uid, streamer, start, end))
            uids.append(uid)
            streamers.append(streamer)
            starts.append(start)
            ends.append(end)
            continue
        dropped[reason] = dropped.get(reason, 0) + 1
    return Batch(uids, streamers, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), received, dropped)

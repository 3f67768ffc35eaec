"""The event log: sessions acknowledged by `POST /events`, kept until a model has taken them in.

Two logs, one shape: records in order, each with a position that only grows; a model file records
the position it has taken in (`metadata["events"]["through"]`), so that a worker holds only the
sessions after it and an update reads only those.

- `FileLog` (one host, EVENTS_PATH): a folder of append-only segments named by the position they
  start at. A record is one line, `<crc32> <json>`, written whole and synced (fdatasync) under an
  exclusive lock before the request is answered; a line a crash tore is cut off by the next writer
  and never read. Positions are byte offsets across segments. A segment over SEGMENT_BYTES is
  closed and a new one started; whole segments a model has taken in are deleted by `trim`.
- `RedisLog` (with REDIS_URL): a stream, one entry per record (its JSON in field `r`, the same
  record as a file line's), positions the entries' ids; the server side is `Store`
  (serve/store.py), this is the trainer's reader. Entries of 1.2.0's stream, one per session
  (fields u, n, a, b), are still read.

A viewer's events are deleted (`forget`): from the file, each line holding them is rewritten
without them at the same length, in place (positions do not move); from the stream, each entry
holding them is replaced by one without them at the stream's end (a stream's entries cannot be
rewritten; the sessions moved are counted once, as a session sent twice is). A "forget" record
then tells every worker to drop what it holds of that viewer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SEGMENT_BYTES = 64 << 20
SEGMENT_NAME = re.compile(r"^(\d{20})\.events$")
READ_BYTES = 16 << 20  # read at most this much of the log per call (a worker catching up reads on)
Session = tuple[str, str, int, int]  # uid, streamer_name, time_start, time_end


class EventLogError(Exception):
    """The event log cannot be used; one line for a person."""


@dataclass
class Chunk:
    """Records read from a log, in order: sessions with the position of their record, viewers forgotten."""

    sessions: list[tuple[int | str, Session]] = field(default_factory=list)
    forget: list[tuple[int | str, str]] = field(default_factory=list)
    position: int | str | None = None  # of the last record read (None: nothing read)


def record_text(record: dict) -> bytes:
    """A record as JSON: a stream entry's field `r`, a file line's text."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def sessions_record(sessions: list[Session], at: float | None = None) -> dict:
    return {"at": round(time.time() if at is None else at, 3), "s": [list(s) for s in sessions]}


def forget_record(uid: str) -> dict:
    return {"at": round(time.time(), 3), "forget": uid}


def encode(record: dict) -> bytes:
    text = record_text(record)
    return b"%08x %s\n" % (zlib.crc32(text), text)


def decode(line: bytes) -> dict | None:
    """A record line (with its newline) as written, or None if torn or not one."""
    if len(line) < 11 or not line.endswith(b"\n") or line[8:9] != b" ":
        return None
    text = line[9:-1].rstrip(b" ")
    try:
        if int(line[:8], 16) != zlib.crc32(text):
            return None
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class FileLog:
    """The append-only event log in `folder` (module docstring). Safe across processes: writes,
    rotation, trims and deletions take an exclusive lock; reads take none and stop at a torn or
    unfinished line."""

    def __init__(self, folder: str | os.PathLike, segment_bytes: int = SEGMENT_BYTES):
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes

    def describe(self) -> str:
        return f"file:{self.folder.resolve()}"

    def close(self) -> None:
        """Nothing to close: every call opens and closes what it uses."""

    # --- layout -------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """(start position, path) of every segment, in order."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        found = [(int(m.group(1)), self.folder / n) for n in names if (m := SEGMENT_NAME.match(n))]
        return sorted(found)

    def _segment(self, start: int) -> Path:
        return self.folder / f"{start:020d}.events"

    def size(self) -> int:
        """Bytes on disk."""
        total = 0
        for _, path in self.segments():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def end(self) -> int:
        """The position after the last complete record (0: an empty log)."""
        segments = self.segments()
        if not segments:
            return 0
        start, path = segments[-1]
        return start + _complete_length(path)

    @contextlib.contextmanager
    def _locked(self):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EventLogError(f"cannot use the event log at {self.folder} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # --- writing ------------------------------------------------------------------------------

    def append(self, sessions: list[Session], at: float | None = None) -> int:
        """Write one record of `sessions` and sync it: its position. Raises EventLogError."""
        return self._write(sessions_record(sessions, at))

    def _write(self, record: dict) -> int:
        line = encode(record)
        with self._locked():
            try:
                start, path = self._active()
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    os.fdatasync(fd)
                    return start + os.fstat(fd).st_size
                finally:
                    os.close(fd)
            except OSError as exc:
                raise EventLogError(f"cannot write the event log at {self.folder} ({exc.strerror or exc})") from None

    def _active(self) -> tuple[int, Path]:
        """The segment to append to (under the lock): the last, its torn tail cut off; a new one
        when it is full or there is none."""
        segments = self.segments()
        if not segments:
            return self._new_segment(0)
        start, path = segments[-1]
        size = path.stat().st_size
        complete = _complete_length(path)
        if complete != size:
            os.truncate(path, complete)  # a record a crash tore: never acknowledged, never read
        if complete >= self.segment_bytes:
            return self._new_segment(start + complete)
        return start, path

    def _new_segment(self, start: int) -> tuple[int, Path]:
        path = self._segment(start)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.fsync(fd)
        os.close(fd)
        _sync_folder(self.folder)
        return start, path

    # --- reading ------------------------------------------------------------------------------

    def read(self, after: int | None, limit: int = READ_BYTES) -> Chunk:
        """The records after position `after` (None: from the start), at most about `limit` bytes."""
        chunk = Chunk()
        after = after or 0
        read = 0
        for start, path in self.segments():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # trimmed meanwhile
            if start + size <= after:
                continue
            offset = max(after - start, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(min(size - offset, limit - read))
            except FileNotFoundError:
                continue
            read += len(data)
            position = start + offset
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    return chunk  # unfinished: read again next time
                position += len(line)
                record = decode(line)
                if record is None:
                    continue  # torn by a crash (cut off by the next writer) or damaged
                _add(chunk, position, record)
                chunk.position = position
            if read >= limit:
                break
        return chunk

    # --- trimming and deleting ----------------------------------------------------------------

    def trim(self, through: int) -> int:
        """Delete the segments whose every record is at or before `through` (a model has them):
        bytes freed. The last segment is replaced by a new empty one first, so positions go on."""
        freed = 0
        with self._locked():
            segments = self.segments()
            if segments:
                start, path = segments[-1]
                complete = _complete_length(path)
                if complete and start + complete <= through:
                    segments.append(self._new_segment(start + complete))
            for (_, path), (next_start, _) in zip(segments, segments[1:], strict=False):
                if next_start <= through:
                    with contextlib.suppress(FileNotFoundError):
                        freed += path.stat().st_size
                        path.unlink()
            _sync_folder(self.folder)
        return freed

    def forget(self, uid: str) -> int:
        """Delete every session of viewer `uid` from the log, in place, and append a forget
        record: how many sessions were deleted."""
        removed = 0
        needle = json.dumps(uid, ensure_ascii=False).encode()
        with self._locked():
            for _, path in self.segments():
                with open(path, "r+b") as f:
                    data = f.read()
                    offset, changed = 0, False
                    for line in data.splitlines(keepends=True):
                        if needle in line and (record := decode(line)) is not None and "s" in record:
                            kept = [s for s in record["s"] if s[0] != uid]
                            if len(kept) != len(record["s"]):
                                removed += len(record["s"]) - len(kept)
                                f.seek(offset)
                                f.write(_padded(encode({**record, "s": kept}), len(line)))
                                changed = True
                        offset += len(line)
                    if changed:
                        f.flush()
                        os.fsync(f.fileno())
            start, path = self._active()
            line = encode(forget_record(uid))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        return removed


def _padded(line: bytes, length: int) -> bytes:
    """A record line padded with spaces before its newline to `length` bytes (it is shorter)."""
    assert len(line) <= length, "a rewritten record is never longer than the one it replaces"
    return line[:-1] + b" " * (length - len(line)) + b"\n"


def _add(chunk: Chunk, position: int | str, record: dict) -> None:
    if "forget" in record:
        chunk.forget.append((position, str(record["forget"])))
        return
    for s in record.get("s", ()):
        if isinstance(s, list) and len(s) == 4:
            chunk.sessions.append((position, (str(s[0]), str(s[1]), int(s[2]), int(s[3]))))


def _complete_length(path: Path) -> int:
    """Bytes up to the end of the last complete line (a torn tail excluded)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":  # the usual case: one byte read
                return size
            tail = 1 << 16
            while True:
                lo = max(size - tail, 0)
                f.seek(lo)
                data = f.read(size - lo)
                cut = data.rfind(b"\n")
                if cut >= 0:
                    return lo + cut + 1
                if lo == 0:
                    return 0
                tail *= 4
    except FileNotFoundError:
        return 0


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the stream in the store --------------------------------------------------------------------


def parse_stream_id(text: str | bytes | None) -> tuple[int, int] | None:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    ms, _, seq = (text or "").partition("-")
    if not (ms.isdigit() and seq.isdigit()) or len(ms) > 20 or len(seq) > 20:
        return None
    return int(ms), int(seq)


def stream_record(fields: dict) -> dict | None:
    """The record of a stream entry's fields (bytes keys and values): its JSON in `r`, or a
    1.2.0 entry of one session (u, n, a, b) or forget (f); None when it is neither (another
    writer's entry)."""
    text = fields.get(b"r")
    if text is not None:
        try:
            record = json.loads(text)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    forgotten = fields.get(b"f")
    if forgotten is not None:
        return {"forget": forgotten.decode("utf-8", "replace")}
    uid, streamer, start, end = (fields.get(key) for key in (b"u", b"n", b"a", b"b"))
    if uid is None or streamer is None or start is None or end is None:
        return None
    try:
        session = [uid.decode("utf-8", "replace"), streamer.decode("utf-8", "replace"), int(start), int(end)]
    except ValueError:
        return None
    return {"s": [session]}


def add_entries(chunk: Chunk, entries) -> None:
    """Stream entries [(id, fields), ...] into `chunk`."""
    for entry_id, fields in entries:
        position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        chunk.position = position
        record = stream_record(fields)
        if record is not None:
            try:
                _add(chunk, position, record)
            except (TypeError, ValueError):
                continue


def without_viewer(fields: dict, uid: str) -> tuple[int, dict | None]:
    """A stream entry with viewer `uid`'s sessions taken out: (how many were, the record to put
    in its place: None when none is left). (0, None) when it holds none of theirs."""
    if b"r" in fields and json.dumps(uid, ensure_ascii=False).encode() not in fields[b"r"]:
        return 0, None
    record = stream_record(fields)
    if record is None or not isinstance(record.get("s"), list):
        return 0, None
    kept = [s for s in record["s"] if not (isinstance(s, list) and s and s[0] == uid)]
    removed = len(record["s"]) - len(kept)
    if not removed:
        return 0, None
    return removed, ({**record, "s": kept} if kept else None)


class RedisLog:
    """The stream at `{prefix}sessions`, read and trimmed by the trainer (synchronous client)."""

    def __init__(self, url: str, prefix: str):
        import redis

        from streamrec.settings import public_url

        self.url = public_url(url)
        self.key = f"{prefix}sessions"
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)

    def describe(self) -> str:
        return f"redis:{self.url}/{self.key}"

    def _call(self, fn, *args, **kwargs):
        from redis.exceptions import RedisError

        try:
            return fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise EventLogError(f"the store at {self.url} is unreachable ({why})") from None

    def read(self, after: str | None, limit: int = 100_000) -> Chunk:
        chunk = Chunk()
        start = f"({after}" if after else "-"
        entries = self._call(self.client.xrange, self.key, start, "+", count=limit)
        add_entries(chunk, entries)
        return chunk

    def size(self) -> int:
        return int(self._call(self.client.xlen, self.key))

    def trim(self, through: str) -> int:
        """Delete the entries at or before `through`: how many."""
        parsed = parse_stream_id(through)
        if parsed is None:
            return 0
        return int(self._call(self.client.xtrim, self.key, minid=f"{parsed[0]}-{parsed[1] + 1}", approximate=False))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def read_all(log: FileLog | RedisLog, after) -> Iterator[Chunk]:
    """Every record after `after`, chunk by chunk."""
    while True:
        chunk = log.read(after)
        if chunk.position is None:
            return
        yield chunk
        after = chunk.position


def events_through(model, log_kind: str) -> int | str | None:
    """The event-log position `model` has taken in, if it was updated from a log of this kind
    ("file" or "redis"); None: none (every session in the log is held, those already in the
    model are told apart by the pair's last session, as an update tells them)."""
    events = model.metadata.get("events")
    if not isinstance(events, dict) or not str(events.get("log", "")).startswith(f"{log_kind}:"):
        return None
    through = events.get("through")
    return through if isinstance(through, int | str) and not isinstance(through, bool) else None


def open_log(settings) -> FileLog | RedisLog:
    """The event log the settings name: the store's stream with REDIS_URL, else the file."""
    if settings.redis_url:
        return RedisLog(settings.redis_url, settings.redis_prefix)
    return FileLog(settings.events_path)


def read_log(log: FileLog | RedisLog, after, time_format: str):
    """(Sessions, the position of the last record) of everything in `log` after `after`, by the
    sessions file's rules (a session sent twice across batches is counted once); (None, None)
    when there is nothing. Sessions of viewers deleted since were deleted from the log itself."""
    import numpy as np
    import pandas as pd

    from streamrec.data.sessions import END, START, STREAMER, UID, Sessions, clean_rows

    uids: list[str] = []
    streamers: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = None
    for chunk in read_all(log, after):
        for _, (uid, streamer, start, end) in chunk.sessions:
            uids.append(uid)
            streamers.append(streamer)
            starts.append(start)
            ends.append(end)
        position = chunk.position
    if position is None:
        return None, None
    frame = pd.DataFrame(
        {
            UID: pd.Series(uids, dtype=object),
            STREAMER: pd.Series(streamers, dtype=object),
            START: np.asarray(starts, dtype=np.int64),
            END: np.asarray(ends, dtype=np.int64),
        }
    )
    clean, _, dropped = clean_rows(frame, log.describe(), empty_ok=True)
    sessions = Sessions(clean, log.describe(), "event log", time_format, len(frame), dropped)
    return sessions, position

"""The sessions one serving worker holds per viewer: those read from the event log after the
position its model has taken in, for the next request.

Bounded three ways, each a setting: the last EVENTS_PER_VIEWER sessions of a viewer (by start),
EVENTS_MAX_VIEWERS viewers (the one whose last session came longest ago goes first), and
EVENTS_HOLD_HOURS since a viewer's last session came (an update takes them in long before). A
viewer's sessions are one flat int64 array (streamer code, start, end, position per session), the
streamer names one table for the worker: about 32 bytes a session and 120 a viewer.

Laid out for the garbage collector: a viewer is a slot number, not an object. The uid-to-slot map
holds strings and integers, the per-slot arrays are not containers, and what is cached per viewer
is tuples of arrays, which the collector stops tracking. A full collection with 200,000 viewers
held as one object each (a dataclass, its dict, its cache) took 300 to 600 ms, every request of
the worker waiting; this way it scans a handful of containers.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections import deque
from collections.abc import Callable

from streamrec.events.log import Chunk, parse_stream_id

FIELDS = 4  # streamer code, start, end, position


def position_key(position: int | str | None) -> int:
    """A log position as one comparable integer: a file's byte offset as it is, a stream id
    "<ms>-<seq>" as ms * 2**22 + seq (-1: none)."""
    if position is None:
        return -1
    if isinstance(position, int):
        return position
    if position.isdigit():
        return int(position)
    parsed = parse_stream_id(position)
    if parsed is None:
        return -1
    return (parsed[0] << 22) | min(parsed[1], (1 << 22) - 1)


def _view(packed: bytes) -> memoryview:
    return memoryview(packed).cast("q")


class Recent(list):
    """A viewer's held sessions, (streamer_name, start, end) each, with the cache of what was
    ranked from them (`cache`: a dict emptied whenever they change; serving's memo)."""

    cache: dict


class Held:
    def __init__(self, per_viewer: int = 50, max_viewers: int = 1_000_000, hold_seconds: float = 48 * 3600):
        self.per_viewer, self.max_viewers, self.hold_seconds = per_viewer, max_viewers, hold_seconds
        # Plain dicts of strings, bytes and floats: the collector does not track them.
        self.viewers: dict[str, bytes] = {}  # uid -> FIELDS int64 per session
        self.arrived: dict[str, float] = {}  # uid -> time.monotonic() of their last session, the quietest first
        self._cache: dict[str, dict] = {}  # uid -> what was answered from their sessions; dropped when they change
        self.names: list[str] = []
        self.codes: dict[str, int] = {}
        self.unknown: set[str] = set()  # names the served model does not know (cleared on a new model)
        self.through = -1  # position_key of what the served model has taken in
        self.newest_time: int | None = None  # latest time_end read
        self.position: int | str | None = None  # of the last record read
        self._records: deque[tuple[int, int]] = deque()  # (position_key, sessions) of records past `through`
        self.pending = 0  # sessions read that the served model has not taken in

    def __len__(self) -> int:
        return len(self.viewers)

    def _code(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code

    def take(
        self, chunk: Chunk, known: Callable[[str], bool] | None = None, advance: bool = True, now: float | None = None
    ) -> int:
        """Add what `chunk` read (sessions, forgotten viewers), in order: sessions added. With
        `known`, only sessions with a streamer it knows (the served model's: no other can be
        ranked) are held, so the name table stays within the model's streamers. `advance`: the
        chunk was read from the log (its position and counts are taken); else it is a batch this
        worker just wrote, which it will also read from the log."""
        now = time.monotonic() if now is None else now
        added = 0
        forget = iter(chunk.forget)
        pending_forget = next(forget, None)
        counted: dict[int, int] = {}
        last_position, key = None, -1
        for position, (uid, streamer, start, end) in chunk.sessions:
            if position != last_position:  # a record's sessions share its position
                last_position, key = position, position_key(position)
            while pending_forget is not None and position_key(pending_forget[0]) < key:
                self.forget(pending_forget[1])
                pending_forget = next(forget, None)
            if key <= self.through:
                continue
            counted[key] = counted.get(key, 0) + 1
            if self.newest_time is None or end > self.newest_time:
                self.newest_time = end
            if known is not None and streamer not in self.codes and not self._known(streamer, known):
                continue
            added += self.add(uid, streamer, start, end, key, now)
        while pending_forget is not None:
            self.forget(pending_forget[1])
            pending_forget = next(forget, None)
        if not advance:
            return added
        for key, n in counted.items():
            if not self._records or key > self._records[-1][0]:
                self._records.append((key, n))
                self.pending += n
        if chunk.position is not None:
            self.position = chunk.position
        return added

    def add(self, uid: str, streamer: str, start: int, end: int, key: int, now: float) -> int:
        """Hold one session (1), or not when it is held already (0: the same streamer, start and end)."""
        code = self._code(streamer)
        packed = self.viewers.get(uid)
        if packed is None:
            packed = b""
        else:
            s = _view(packed)
            for i in range(0, len(s), FIELDS):
                if s[i] == code and s[i + 1] == start and s[i + 2] == end:
                    return 0
            del self.arrived[uid]  # to the end: the most recent
        packed += struct.pack("4q", code, start, end, key)
        if len(packed) > 8 * FIELDS * self.per_viewer:
            s = _view(packed)
            latest = sorted(i for _, i in sorted((s[i + 1], i) for i in range(0, len(s), FIELDS))[-self.per_viewer :])
            packed = b"".join(s[i : i + FIELDS].tobytes() for i in latest)
        self.viewers[uid] = packed
        self.arrived[uid] = now
        self._cache.pop(uid, None)
        if len(self.viewers) > self.max_viewers:
            # the quietest out, a hundredth of the cap at a time (one pass over the oldest)
            for quiet in list(itertools.islice(self.arrived, max(1, self.max_viewers // 100))):
                self.forget(quiet)
        return 1

    def _known(self, name: str, known: Callable[[str], bool]) -> bool:
        """`known(name)`, remembered for the names it refused (a bounded set: the model's names
        are remembered in the name table)."""
        if name in self.unknown:
            return False
        if known(name):
            return True
        if len(self.unknown) >= 100_000:
            self.unknown.clear()
        self.unknown.add(name)
        return False

    def forget(self, uid: str) -> None:
        if self.viewers.pop(uid, None) is not None:
            del self.arrived[uid]
            self._cache.pop(uid, None)

    def taken_in(self, through: int | str | None) -> None:
        """The served model has taken in the log up to `through`: hold only what came after it
        (dropped per viewer when next read, and by `expire`)."""
        self.through = position_key(through)
        self.unknown.clear()  # a new model may know them
        while self._records and self._records[0][0] <= self.through:
            self.pending -= self._records.popleft()[1]

    def sessions(self, uid: str, now: float | None = None) -> Recent | None:
        """(streamer_name, start, end) of the viewer's sessions the served model has not taken
        in, or None (none held: the viewer is served as the model alone serves them)."""
        packed = self.viewers.get(uid)
        if packed is None:
            return None
        now = time.monotonic() if now is None else now
        if now - self.arrived[uid] > self.hold_seconds:
            self.forget(uid)
            return None
        cache = self._cache.get(uid)
        if cache is None or cache.get("through") != self.through:
            s = _view(packed)
            kept = [(self.names[s[i]], s[i + 1], s[i + 2]) for i in range(0, len(s), FIELDS) if s[i + 3] > self.through]
            if not kept:
                self.forget(uid)
                return None
            cache = self._cache[uid] = {"through": self.through, "sessions": tuple(kept)}
        out = Recent(cache["sessions"])
        out.cache = cache
        return out

    def expire(self, now: float | None = None) -> int:
        """Drop the viewers whose last session came over EVENTS_HOLD_HOURS ago: how many."""
        now = time.monotonic() if now is None else now
        old = []
        for uid, arrived in self.arrived.items():  # the quietest first
            if now - arrived <= self.hold_seconds:
                break
            old.append(uid)
        for uid in old:
            self.forget(uid)
        return len(old)

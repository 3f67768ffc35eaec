"""Availability: which streamers are live right now, in the form ranking needs.

    live = LiveSet.build(model, ["streamer_a", "streamer_b"])
    rank(model, row, k=10, among=live.candidates, live=True, lists=live.lists)   # model/scoring.py

A viewer can only watch a streamer who is live, so live-only rankings score just the live
streamers: a few thousand dot products per request. Everything per-set (their factors, the live
part of the popularity ranking) is gathered once when the set is published, not per request.
A LiveSet belongs to one model; after a model reload it is rebuilt from its names.

A live streamer may come with what the stream is now: its category, its language, its viewer
count (`LiveStream`). For live streamers that wins over the streamer catalog (`data/catalog.py`).

Every user's live-only lists are ranked after the set is served (`live_lists`, seconds at 100k
users): until they are there, a live-only request is ranked on request among the live streamers,
with the same ranker, so a new set is served at once.

The published streams are also kept as JSON (`live_body`): in a small file (`write_live`/`read_live`)
or in the shared store (serve/store.py), so that every worker process serves the same live set and
a restarted worker starts with it. `PUT /live`, the file and the store share one schema
(`LiveUpdate`, `LiveFile`): a set that does not validate is refused whole with one line
(LiveFileError), never half used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
)

from streamrec.data.catalog import MAX_NAME_LENGTH, MAX_VALUE_LENGTH, UNKNOWN, Codes
from streamrec.model.checks import one_line
from streamrec.model.model_file import atomic_write
from streamrec.model.ranking import RankerName, RankerWeights, ranked_lists
from streamrec.model.recommender import LIVE_LIST_LENGTH, Candidates, Recommender

MAX_STREAMERS = 1_000_000  # streamers in one live set (Twitch has about 100k live at its peak)
MAX_VIEWERS = 10**9  # viewers of one stream: more than any stream has had, less than any overflow
# Live-only lists are ranked in advance while viewers x live streamers is at most this (about 20 s of
# one core: 100k viewers x 20k live, 1M x 2k); past it, every live-only request is ranked on request
# among the live streamers (measured at 1M viewers and 100k live: 41-60 ms a request, median), which
# costs a busy worker less than ranking every viewer's lists (over an hour of one core there).
LIVE_LISTS_MAX_PAIRS = 2_000_000_000


class LiveFileError(ValueError):
    """The live-set file cannot be used; the message is one line meant for a person."""


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("expected text; found a lone surrogate (not UTF-8)") from None
    return text


Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(_utf8)]
Value = Annotated[str, StringConstraints(max_length=MAX_VALUE_LENGTH), AfterValidator(_utf8)]


class LiveStreamer(BaseModel):
    streamer_name: Name
    category: Value | None = Field(None, description="what the stream is in now (a game, Just Chatting, ...)")
    language: Value | None = Field(None, description="the stream's language now")
    viewers: int | None = Field(None, ge=0, le=MAX_VIEWERS, description="viewers watching now")


def _kind(item) -> str:
    return "name" if isinstance(item, str) else "stream"


# A name or an object, told apart by type: an error then names the one it was, not both.
Item = Annotated[Annotated[Name, Tag("name")] | Annotated[LiveStreamer, Tag("stream")], Discriminator(_kind)]
Streamers = Annotated[
    list[Item],
    Field(
        description="the streamers live now: names, or objects with what is known of the stream now",
        max_length=MAX_STREAMERS,
    ),
]


class LiveUpdate(BaseModel):
    """The body of `PUT /live`."""

    streamers: Streamers


class LiveFile(LiveUpdate):
    """The live-set file every worker reads: what `PUT /live` took, and when."""

    since: AwareDatetime


@dataclass(frozen=True)
class LiveStream:
    """One live streamer as published: a name, and what is known of the stream now."""

    name: str
    category: str | None = None
    language: str | None = None
    viewers: int | None = None

    def to_json(self) -> str | dict:
        if self.category is None and self.language is None and self.viewers is None:
            return self.name
        return {
            "streamer_name": self.name,
            "category": self.category,
            "language": self.language,
            "viewers": self.viewers,
        }

    @classmethod
    def of(cls, item: str | LiveStreamer) -> LiveStream:
        """From a validated item of `LiveUpdate.streamers`."""
        if isinstance(item, str):
            return cls(item)
        return cls(item.streamer_name, item.category, item.language, item.viewers)


@dataclass(frozen=True)
class LiveSet:
    names: tuple[str, ...]  # as published, known to the model or not
    rows: np.ndarray  # sorted streamer rows of the live streamers the model knows
    candidates: Candidates  # the same rows, gathered for ranking
    mask: np.ndarray  # bool per streamer row
    popular: np.ndarray  # live streamer rows, most viewers now first if published, else most popular
    unknown: int  # distinct published names the model does not know
    since: datetime
    # Every user's top LIVE_LIST_LENGTH live streamers per ranker, as Recommender.lists.
    lists: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    streams: tuple[LiveStream, ...] = ()  # as published (the first of a repeated name), one per name
    codes: Codes | None = None  # category and language per streamer row: the catalog's, the live ones' over it
    viewers: np.ndarray | None = None  # per live row (aligned with rows): viewers now, -1 when not published
    version: str | None = None  # as stored: "<epoch>.<number>" in the store, "file:<mtime_ns>" in the file

    @classmethod
    def build(
        cls,
        model: Recommender,
        streams: Sequence[str | LiveStream],
        since: datetime | None = None,
        rank: bool = True,
        codes: Codes | None = None,
        version: str | None = None,
    ) -> LiveSet:
        """The live set of `streams` (names, or LiveStreams with what is known of the stream now)
        for `model`, over the catalog's `codes`; with `rank`, every user's live-only lists are
        ranked now (about two seconds for 100k users and 1,000 live streamers) so that a
        live-only request is a lookup, like a default one."""
        by_name: dict[str, LiveStream] = {}
        for item in streams:
            stream = item if isinstance(item, LiveStream) else LiveStream(item)
            by_name.setdefault(stream.name, stream)
        distinct = list(by_name)
        rows = model.streamers.rows(distinct)
        known = np.unique(rows[rows >= 0])
        published = list(by_name.values())
        codes = (codes or Codes.empty(model.n_streamers)).with_values(
            rows, [s.category for s in published], [s.language for s in published]
        )
        viewers = np.full(len(known), -1, dtype=np.int64)
        counted = np.array([s.viewers is not None and r >= 0 for s, r in zip(published, rows.tolist(), strict=True)])
        if counted.any():
            at = np.searchsorted(known, rows[counted])
            viewers[at] = [s.viewers or 0 for s, c in zip(published, counted, strict=True) if c]
        mask = np.zeros(model.n_streamers, dtype=bool)
        mask[known] = True
        return cls(
            names=tuple(distinct),
            rows=known,
            candidates=model.candidates(known),
            mask=mask,
            popular=_popular_now(model.popular_ranking[mask[model.popular_ranking]], known, viewers),
            unknown=int(np.count_nonzero(rows < 0)),
            since=since or datetime.now(UTC),
            lists=live_lists(model, known) if rank and len(known) else None,
            streams=tuple(published),
            codes=codes,
            viewers=viewers,
            version=version,
        )

    def with_lists(self, lists: dict[str, tuple[np.ndarray, np.ndarray]]) -> LiveSet:
        return replace(self, lists=lists)

    def with_version(self, version: str | None) -> LiveSet:
        return replace(self, version=version)

    @property
    def ranked_by_viewers(self) -> bool:
        """Whether `popular` is ordered by viewers now (some were published)."""
        return self.viewers is not None and bool((self.viewers >= 0).any())

    def viewers_of(self, rows: np.ndarray) -> np.ndarray:
        """Viewers now of live rows (-1 where not published)."""
        assert self.viewers is not None, "a built live set has its viewer counts"
        return self.viewers[np.searchsorted(self.rows, rows)]

    def counts(self, kind: str) -> dict[str, int]:
        """How many live streamers (known to the model) each category ("category") or language
        ("language") has, most first; streamers with it unknown are not counted."""
        if self.codes is None:
            return {}
        codes, values = (
            (self.codes.category, self.codes.categories)
            if kind == "category"
            else (self.codes.language, self.codes.languages)
        )
        live = codes[self.rows]
        live = live[live != UNKNOWN]
        counts = np.bincount(live, minlength=len(values))
        order = np.lexsort((np.arange(len(values)), -counts))
        return {values[i]: int(counts[i]) for i in order if counts[i]}

    def __len__(self) -> int:
        return len(self.rows)


def _popular_now(by_popularity: np.ndarray, rows: np.ndarray, viewers: np.ndarray) -> np.ndarray:
    """Live rows by viewers now, most first, when any were published ("popular now"); those with
    none published, and ties, keep the order of recent popularity."""
    if not (viewers >= 0).any():
        return by_popularity
    now = viewers[np.searchsorted(rows, by_popularity)]
    return by_popularity[np.argsort(-now, kind="stable")]


def live_body(streams: Sequence[LiveStream], since: datetime) -> bytes:
    """The published streams as the live-set file's JSON (what the store holds too): streams
    already validated (`LiveStream.of` a LiveUpdate's items), written as LiveFile reads them."""
    items = [
        {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item
        for item in (s.to_json() for s in streams)
    ]
    return json.dumps({"since": since.isoformat(), "streamers": items}, separators=(",", ":")).encode()


def parse_live(body: bytes, refusal: str) -> tuple[list[LiveStream], datetime]:
    """(streams, since) of a live set's JSON; LiveFileError says `refusal` and the first problem."""
    try:
        data = LiveFile.model_validate_json(body)
    except ValidationError as exc:
        raise LiveFileError(f"{refusal}: {one_line(exc)}") from None
    return [LiveStream.of(item) for item in data.streamers], data.since


def write_live(path: Path, streams: list[LiveStream], since: datetime) -> int:
    """Write the published streams atomically (as the model file is written); returns the file's
    mtime_ns (its version)."""
    body = live_body(streams, since)
    atomic_write(path, lambda f: f.write(body))
    return path.stat().st_mtime_ns


def live_file_limit(max_body_bytes: int) -> int:
    """The largest live-set file read: what a `PUT /live` of MAX_BODY_BYTES can make (the file
    escapes what the body may have sent raw, at most 6 bytes for 2), with room for `since`."""
    return 3 * max_body_bytes + 4096


def read_live(path: Path, limit: int) -> tuple[list[LiveStream], datetime, int] | None:
    """(streams, since, mtime_ns) from a file written by write_live; None if there is none.
    Raises LiveFileError naming the path and the first problem (a file over `limit` bytes, not
    JSON, or not the schema of PUT /live)."""
    try:
        with open(path, "rb") as f:
            version = os.fstat(f.fileno()).st_mtime_ns
            size = f.seek(0, 2)
            if size > limit:
                raise LiveFileError(f"{path}: expected a live-set file of at most {limit:,} bytes; found {size:,}")
            f.seek(0)
            body = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LiveFileError(f"{path}: cannot read the live set ({exc.strerror or exc})") from None
    streams, since = parse_live(body, f"{path}: not a live-set file")
    return streams, since, version


def live_lists(
    model: Recommender, known: np.ndarray, stop: Callable[[], bool] | None = None, threads: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Every user's live-only lists among the live rows `known`: the live ranker
    (model.live_ranker) for the default list, the discovery ranker with exclude_watched. None when
    `stop()` turned true meanwhile (a newer set, another model). `threads`: see ranked_lists."""
    rankers: dict[str, RankerWeights] = {
        RankerName.ALL: model.rankers[model.live_ranker],
        RankerName.NEW: model.rankers[RankerName.NEW],
    }
    lists = ranked_lists(
        model, rankers, LIVE_LIST_LENGTH, among=known, bonus=model.live_bonus, stop=stop, threads=threads
    )[0]
    return None if stop is not None and stop() else lists

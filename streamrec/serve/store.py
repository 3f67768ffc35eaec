"""The shared store of a fleet of serving hosts: Redis 7 or Valkey at REDIS_URL, through redis-py's
asyncio client (the event loop waits on it; a request never does).

What it holds, every key under REDIS_PREFIX (default `streamrec:`) so that deployments can share
one server:

    live      hash: body (the live set as PUT /live took it, with `since`), version, epoch, number
    model     hash: checksum and created_at of the model the fleet was last asked to serve
    fleet     hash: one field per worker ("instance/pid"), its JSON heartbeat (last second)
    events    channel: "live <version>" after a publish, "reload <checksum>" after a reload
    sessions  stream: the event log of POST /events, one entry per batch (events/log.py)

A live set's version is "<epoch>.<number>": the number counts publishes, the epoch is the store's
clock (microseconds) when the first set was stored in it. A store that restarted empty starts a
new, later epoch, so a set published after the restart is newer than any before it, however few
publishes it has seen. Versions compare as (epoch, number). Storing a set, its version and the
message is one script: the store runs it whole or not at all, so nothing is ever half-written.

Nothing here logs or raises the URL with its password: `public_url` is what a message may show.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from streamrec.events.log import Chunk, add_entries, forget_record, record_text, sessions_record, without_viewer
from streamrec.settings import public_url

Version = tuple[int, int]  # (epoch, number) of a live set in the store
TIMEOUT_SECONDS = 2.0  # to connect, and for one command: a write answers 503 after this, not later
FLEET_SECONDS = 60.0  # GET /admin/fleet lists workers heard from within this long
FORGET_SECONDS = 3600.0  # heartbeats older than this are deleted when the fleet is read

# KEYS[1] the live hash; ARGV[1] the body, ARGV[2] the channel. Returns the new version.
PUBLISH_LIVE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'number', 0)
end
local number = redis.call('HINCRBY', KEYS[1], 'number', 1)
local version = epoch .. '.' .. number
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'version', version)
redis.call('PUBLISH', ARGV[2], 'live ' .. version)
return version
"""


class StoreUnavailable(Exception):
    """The store did not answer; the message is one line without the URL's password."""


class NotDurable(Exception):
    """The store took sessions but cannot say they are on its disk; one line for a person."""


NOT_DURABLE = (
    "the store at {url} does not confirm that sessions are on its disk before POST /events answers: "
    "run it with appendonly yes and appendfsync always (Redis 7.0), or appendonly yes on Redis 7.2+ "
    "(asked with WAITAOF); the sessions were kept in the stream but not acknowledged"
)
DURABILITY_CHECK_SECONDS = 60.0  # how long a store's appendfsync setting, read once, is trusted


def parse_version(text: str | bytes | None) -> Version | None:
    """(epoch, number) of a stored version, or None when there is none or it is not one."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    epoch, _, number = (text or "").partition(".")
    if not (epoch.isdigit() and number.isdigit()) or len(epoch) > 20 or len(number) > 20:
        return None
    return int(epoch), int(number)


def format_version(version: Version | None) -> str | None:
    return None if version is None else f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Message:
    kind: str  # "live" or "reload"
    value: str  # the live set's version, or the model's checksum


def parse_message(data: bytes | str) -> Message | None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    kind, _, value = text.partition(" ")
    return Message(kind, value) if kind in ("live", "reload") and value and len(value) <= 100 else None


class Store:
    """One worker's connection to the store. Every method raises StoreUnavailable when the store
    does not answer within TIMEOUT_SECONDS (after two quick retries); the client reconnects by itself
    on the next call."""

    def __init__(self, url: str, prefix: str):
        self.url = public_url(url)
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            health_check_interval=10,
        )
        self.channel = f"{prefix}events"
        self.live_key, self.model_key, self.fleet_key = f"{prefix}live", f"{prefix}model", f"{prefix}fleet"
        self._publish = self.client.register_script(PUBLISH_LIVE)
        self.sessions_key = f"{prefix}sessions"
        self._waitaof: bool | None = None  # None: not tried yet
        self._fsync_checked: tuple[float, bool] | None = None

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        # redis-py's messages name host and port, never the password; keep them to one line.
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        return StoreUnavailable(f"the store at {self.url} is unreachable ({why})")

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None

    async def publish_live(self, body: bytes) -> Version:
        """Store a live set (the live-set file's JSON) and tell every worker: its new version."""
        try:
            version = await self._publish(keys=[self.live_key], args=[body, self.channel])
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        parsed = parse_version(version)
        assert parsed is not None, f"the publish script gave {version!r}"
        return parsed

    async def live_version(self) -> Version | None:
        try:
            return parse_version(await self.client.hget(self.live_key, "version"))
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None

    async def live(self, limit: int) -> tuple[Version, bytes] | None:
        """(version, body) of the stored live set, or None when there is none. A body over `limit`
        bytes is not read: ValueError."""
        try:
            size = await self.client.hstrlen(self.live_key, "body")
            if size > limit:
                raise ValueError(f"expected a stored live set of at most {limit:,} bytes; found {size:,}")
            version, body = await self.client.hmget(self.live_key, ["version", "body"])
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        parsed = parse_version(version)
        if body is None or parsed is None:
            if body is None and version is None:
                return None
            raise ValueError(f"expected a live set with a version like '<epoch>.<number>'; found {version!r:.60}")
        return parsed, body if isinstance(body, bytes) else body.encode()

    async def announce_model(self, checksum: str, created_at: str | None) -> int:
        """Record the model the fleet should serve and tell every worker to reload: how many
        workers the message reached."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.model_key, mapping={"checksum": checksum, "created_at": created_at or ""})
                pipe.publish(self.channel, f"reload {checksum}")
                _, reached = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        return int(reached)

    async def fleet_model(self) -> str | None:
        """The checksum of the model the fleet was last asked to serve, if any."""
        try:
            checksum = await self.client.hget(self.model_key, "checksum")
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        if isinstance(checksum, bytes):
            checksum = checksum.decode("ascii", "replace")
        return checksum[:64] if checksum else None

    async def heartbeat(self, worker: str, state: dict) -> Version | None:
        """Record this worker's state with the time, and read the live set's version: one round trip."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(self.fleet_key, worker, json.dumps({**state, "seen": time.time()}))
                pipe.hget(self.live_key, "version")
                _, version = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        return parse_version(version)

    async def fleet(self) -> list[dict]:
        """The workers heard from within FLEET_SECONDS, by instance and pid; older heartbeats past
        FORGET_SECONDS are deleted."""
        try:
            entries = await self.client.hgetall(self.fleet_key)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        now, seen, stale = time.time(), [], []
        for field, value in entries.items():
            try:
                state = json.loads(value)
                age = now - float(state["seen"])
            except (ValueError, KeyError, TypeError):
                stale.append(field)
                continue
            if age > FORGET_SECONDS:
                stale.append(field)
            elif age <= FLEET_SECONDS:
                seen.append({**state, "seen_seconds_ago": round(max(age, 0.0), 1)})
        if stale:
            try:
                await self.client.hdel(self.fleet_key, *stale)
            except (RedisError, OSError):
                pass  # deleted on a later read
        return sorted(seen, key=lambda s: (str(s.get("instance")), int(s.get("pid") or 0)))

    def pubsub(self):
        return self.client.pubsub(ignore_subscribe_messages=True)

    # --- the event log ----------------------------------------------------------------------------

    async def append_sessions(self, sessions: list[tuple[str, str, int, int]]) -> str:
        """Add sessions (uid, streamer, start, end) to the stream as one entry, and wait until the
        store has it on disk: the entry's id. Raises StoreUnavailable, NotDurable."""
        text = record_text(sessions_record(sessions))
        try:
            entry = await self.client.xadd(self.sessions_key, {"r": text})
            await self._durable()
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def _durable(self) -> None:
        """Return once the store's append-only file has what was written: WAITAOF on Redis 7.2+;
        on 7.0, which has no WAITAOF, its configuration must sync every write (read once a minute)."""
        if self._waitaof is not False:
            try:
                local, _ = await self.client.execute_command("WAITAOF", 1, 0, int(TIMEOUT_SECONDS * 1000))
                self._waitaof = True
                if int(local) >= 1:
                    return
                raise NotDurable(NOT_DURABLE.format(url=self.url))
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower() and "appendonly" not in str(exc).lower():
                    raise
                if "appendonly" in str(exc).lower():
                    raise NotDurable(NOT_DURABLE.format(url=self.url)) from None
                self._waitaof = False
        now = time.monotonic()
        if self._fsync_checked is None or now - self._fsync_checked[0] > DURABILITY_CHECK_SECONDS:
            config = await self.client.config_get("append*")
            ok = config.get("appendonly") == "yes" and config.get("appendfsync") == "always"
            self._fsync_checked = (now, ok)
        if not self._fsync_checked[1]:
            raise NotDurable(NOT_DURABLE.format(url=self.url))

    async def sessions_after(self, after: str | None, block_ms: int, count: int = 5000) -> Chunk:
        """The stream's entries after id `after` (None: from its start), at most `count`; waits up
        to `block_ms` for one when there is none (the trainer reads with RedisLog.read)."""
        chunk = Chunk()
        try:
            answer: Any = await self.client.xread({self.sessions_key: after or "0-0"}, count=count, block=block_ms)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        add_entries(chunk, answer[0][1] if answer else [])  # RESP2: [[key, entries]]
        return chunk

    async def forget_sessions(self, uid: str) -> int:
        """Delete every session of viewer `uid` from the stream, then add a forget entry: how many.
        An entry holding theirs is replaced, in one transaction, by one without them at the
        stream's end (or just deleted when nothing else is left in it)."""
        deleted = 0
        try:
            after = "-"
            while True:
                entries: Any = await self.client.xrange(self.sessions_key, after, "+", count=1000)
                if not entries:
                    break
                for entry_id, fields in entries:
                    removed, kept = without_viewer(fields, uid)
                    if not removed:
                        continue
                    async with self.client.pipeline(transaction=True) as pipe:
                        pipe.xdel(self.sessions_key, entry_id)
                        if kept is not None:
                            pipe.xadd(self.sessions_key, {"r": record_text(kept)})
                        gone = (await pipe.execute())[0]
                    deleted += removed if gone else 0
                last = entries[-1][0].decode()
                ms, _, seq = last.partition("-")
                after = f"{ms}-{int(seq) + 1}"
            await self.client.xadd(self.sessions_key, {"r": record_text(forget_record(uid))})
            await self._durable()
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None
        return deleted

    async def events_bytes(self) -> int:
        """The stream's memory in the store (Redis's estimate from a sample of its nodes)."""
        try:
            return int(await self.client.memory_usage(self.sessions_key) or 0)
        except (RedisError, OSError) as exc:
            raise self.unavailable(exc) from None

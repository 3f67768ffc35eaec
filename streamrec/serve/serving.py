"""What one worker serves and how it changes, with no HTTP in it: the snapshot a request reads
(`ServedModel`: model, live set, catalog codes, name cache, filter cache) and `Serving`, which
holds it with the settings and metrics and replaces it: reload, publish, watch.

Every user's ranked lists are computed at training time, so an answer is a slice and a JSON string.
A new model or live set swaps in with one reference assignment: a request holds the snapshot it
started with until it finishes, so none fails during a swap, and a file that fails to load leaves
the old snapshot serving. Every worker maps the model file (one copy in the page cache for all),
reads its pages in before it reports ready or swaps a model in, and checks the model file (and
the live-set file, or with REDIS_URL the shared store: serve/store.py) once a second: what changed
is loaded in a background thread and swapped in. The old model stays mapped, valid, until the last
request that holds it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import threading
import time
from datetime import datetime
from json.encoder import encode_basestring_ascii as encode_json_string  # what json.dumps(str) does, in C
from typing import TypeGuard

import numpy as np
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from streamrec.data import demo as demo_data
from streamrec.data.catalog import Catalog, CatalogError, Codes, catalog_codes, read_catalog
from streamrec.data.sessions import INTEGER
from streamrec.events.batch import Batch, parse_batch
from streamrec.events.held import Held
from streamrec.events.log import Chunk, EventLogError, FileLog, events_through
from streamrec.model.model_file import ModelError, load_model, warm
from streamrec.model.popular import most_popular, top_up
from streamrec.model.recommender import LIST_LENGTH, Recommender
from streamrec.model.scoring import (
    PERSONAL,
    POPULAR,
    RECENT,
    Folded,
    fold_sessions,
    rank,
    rank_folded_list,
    rank_recent,
)
from streamrec.serve.filters import FilterCache, Passing, filter_key, gather
from streamrec.serve.live import (
    LIVE_LISTS_MAX_PAIRS,
    LiveFileError,
    LiveSet,
    LiveStream,
    live_body,
    live_file_limit,
    live_lists,
    parse_live,
    read_live,
    write_live,
)
from streamrec.serve.monitoring import Metrics
from streamrec.serve.store import (
    NotDurable,
    Store,
    StoreUnavailable,
    Version,
    format_version,
    parse_message,
    parse_version,
)
from streamrec.settings import Settings, instance_name, live_file

log = logging.getLogger("service")

LIVE_CHECK_SECONDS = 1.0  # how often a worker looks for a live set or model file another published
EVENTS_POLL_SECONDS = 0.2  # how often a worker looks for new records in the event log file
EVENTS_READ_BYTES = 1 << 20  # of the file log per read on the event loop (about 25,000 sessions)
EVENTS_READ_ENTRIES = 5000  # of the store's stream per read
NAME_CACHE = 100_000  # JSON-encoded streamer names kept per worker (about 10 MB); then started afresh


class NoLiveSet(Exception):
    """live_only was asked for before any live set was published."""


class ServedModel:
    """The loaded model, the live set published for it, and what makes an answer cheap: every
    streamer name already JSON-encoded, so a response is a few string joins around a slice of
    the precomputed lists. Replaced whole, never changed: a request sees one consistent state."""

    def __init__(
        self,
        model: Recommender,
        live: LiveSet | None = None,
        names_cache: dict[int, str] | None = None,
        codes: Codes | None = None,
        filter_budget: int = 32 << 20,
        filters: FilterCache | None = None,
    ):
        self.model = model
        self.live = live
        # Category and language per streamer row: the catalog's (STREAMERS_PATH); a live set's
        # are the catalog's with what was published for the live streamers over them.
        self.catalog_codes = codes if codes is not None else Codes.empty(model.n_streamers)
        self.filters = filters if filters is not None else FilterCache(filter_budget)
        self._names: dict[int, str] = names_cache if names_cache is not None else {}
        model.history_bonus  # noqa: B018 - derived now, not inside the first request that needs it

    def with_live(
        self, streams: list[LiveStream], since: datetime | None = None, version: str | None = None
    ) -> ServedModel:
        """This model with `streams` live; their live-only lists are not ranked yet (requests are
        ranked on request among them until `with_live_lists`)."""
        live = LiveSet.build(self.model, streams, since, rank=False, codes=self.catalog_codes, version=version)
        return ServedModel(self.model, live, self._names, self.catalog_codes, self.filters.budget)

    def with_streams(self, live: LiveSet | None) -> ServedModel:
        """This model with the streamers of another snapshot's live set (by name, as published)."""
        return self if live is None else self.with_live(list(live.streams), live.since, live.version)

    def with_live_lists(self, live: LiveSet) -> ServedModel:
        """The same snapshot with `live`: its live set with the lists ranked (filters kept: they
        depend on which streamers are live, not on the lists)."""
        return ServedModel(self.model, live, self._names, self.catalog_codes, filters=self.filters)

    def for_model(self, model: Recommender, catalog: Catalog | None) -> ServedModel:
        """The same live streamers (by name, with their metadata) on another model and catalog."""
        codes = catalog_codes(catalog, model.streamers)
        old = self.live
        live = None
        if old is not None:
            live = LiveSet.build(model, list(old.streams), old.since, rank=False, codes=codes, version=old.version)
        return ServedModel(model, live, None, codes, self.filters.budget)

    @property
    def codes(self) -> Codes:
        return self.live.codes if self.live is not None and self.live.codes is not None else self.catalog_codes

    def filtered(self, categories: list[str], languages: list[str], live_only: bool = False) -> Passing:
        """The streamers a filter lets through, of the catalog (of the live set with `live_only`):
        their category is one of `categories` (if any are given) and their language one of
        `languages`, case-insensitively; a streamer with it unknown never passes."""
        codes = self.codes
        key = filter_key(codes, categories, languages, live_only)
        live = self.live
        if live_only:
            assert live is not None, "live_only needs a live set (checked by the caller)"
            return self.filters.get(key, lambda: gather(self.model, codes, key, live.rows, live.popular))
        model = self.model
        return self.filters.get(key, lambda: gather(model, codes, key, model.catalog, model.popular_ranking))

    def name_json(self, row: int) -> str:
        """One streamer's name, JSON-encoded: from the id map once, then from a small cache (the
        streamers a worker serves are mostly the catalog's few thousand). Encoded here rather than
        read from the file's `streamer_json`, so that no byte of a file reaches an answer unencoded."""
        name = self._names.get(row)
        if name is None:
            if len(self._names) >= NAME_CACHE:
                self._names.clear()
            name = self._names[row] = encode_json_string(self.model.streamers.name(row))
        return name

    def items_json(self, rows, scores) -> str:
        names, name_json = self._names, self.name_json
        return ",".join(
            f'{{"streamer_name":{names.get(i) or name_json(i)},"score":{s!r}}}'
            for i, s in zip(rows.tolist(), scores.tolist(), strict=True)
        )

    def response(self, user_id: str, source: str, rows: np.ndarray, scores: np.ndarray) -> bytes:
        """The JSON body of RecommendationResponse for what `recommend` gave."""
        items = self.items_json(rows, scores)
        return f'{{"user_id":{json.dumps(user_id)},"source":"{source}","recommendations":[{items}]}}'.encode()

    def recommend(
        self,
        user_id: str,
        k: int,
        exclude_watched: bool,
        live_only: bool = False,
        recent: list[str] | None = None,
        categories: list[str] | None = None,
        languages: list[str] | None = None,
        held: list[tuple[str, int, int]] | None = None,
        newest: int = 0,
    ) -> tuple[str, np.ndarray, np.ndarray]:
        """(source, streamer rows, scores) for any viewer: known to the model (personal), known by
        `recent` streamers (recent), or neither (popular). Raises NoLiveSet for live_only without a
        live set. With `categories` or `languages`, every source ranks only the streamers that
        pass, and the answer holds min(k, streamers that pass) of them, topped up with the most
        popular that pass. `held`: the viewer's sessions from the event log that the model has not
        taken in ((streamer_name, start, end); `newest` the latest time known): folded into a known
        viewer's history, or for a viewer the model does not know, their recent streamers."""
        model, live = self.model, self.live if live_only else None
        if live_only and live is None:
            raise NoLiveSet
        only = self.filtered(categories or [], languages or [], live_only) if categories or languages else None
        row = model.users.get(user_id)
        result, seen, folded = None, None, None
        cache = getattr(held, "cache", None)
        if held:
            if row is not None:
                # kept as a plain tuple, which the collector stops tracking (a named tuple it never does)
                plain = self._memo(cache, "fold", newest, lambda: _plain(fold_sessions(model, row, held, newest)))
                folded = None if plain is None else Folded(*plain)
            else:
                recent = [name for name, _, _ in held] + (recent or [])
        if row is not None:
            source = PERSONAL
            if only is not None:
                lists = live.lists if live is not None else model.lists
                result = rank(
                    model,
                    row,
                    k,
                    exclude_watched,
                    among=only.candidates,
                    passes=only.mask,
                    share=only.share,
                    live=live_only,
                    lists=lists,
                    folded=folded,
                )
                if exclude_watched:
                    seen = model.history(row)[0] if folded is None else folded.rows
            elif live is not None:
                result = rank(
                    model, row, k, exclude_watched, among=live.candidates, live=True, lists=live.lists, folded=folded
                )
            elif folded is not None and k <= LIST_LENGTH:
                # as a stored list: ranked once to its length, kept until the sessions change
                rows, scores = self._memo(
                    cache,
                    ("list", exclude_watched),
                    newest,
                    lambda: (
                        rank_folded_list(model, row, folded, LIST_LENGTH, exclude_watched)
                        or rank(model, row, LIST_LENGTH, exclude_watched, folded=folded)
                    ),
                )
                result = rows[:k], scores[:k]
            else:
                result = rank(model, row, k, exclude_watched, folded=folded)
        elif recent:
            source = RECENT
            recent_among = live.candidates if live is not None else None
            result = rank_recent(model, recent, k, exclude_watched, recent_among, None if only is None else only.mask)
            if result is not None and exclude_watched:
                seen = model.streamers.rows(recent)
        if result is None:
            source = POPULAR
            result = self._popular(k, live, only)
        elif only is not None and len(result[0]) < k:
            rows, scores = result
            skip = rows if seen is None else np.concatenate([rows, seen[seen >= 0]])
            result = top_up(rows, scores, k, only.popular(k + len(skip)), model.popularity, skip)
        return source, *result

    def _memo(self, cache: dict | None, key, newest: int, compute):
        """What `compute` gives, kept in a held viewer's `cache` for this model while the newest
        time known moves by at most a thousandth of the log's span (the history features are
        taken at it; a thousandth moves a recency by 2%); the cache is emptied when the viewer's
        sessions change."""
        if cache is None:
            return compute()
        hit = cache.get(key)
        serial = self.model.serial  # not the model: a tuple of numbers and arrays is not tracked by the collector
        if hit is not None and hit[0] == serial and abs(newest - hit[1]) * 1000 <= self.model.time_span:
            return hit[2]
        value = compute()
        cache[key] = (serial, newest, value)
        return value

    def _popular(self, k: int, live: LiveSet | None, only: Passing | None) -> tuple[np.ndarray, np.ndarray]:
        """The popular list (of the `live` streamers if given: by viewers now when those were
        published), of the streamers that pass `only` if given."""
        if only is None:
            ranking = live.popular if live is not None else self.model.popular_ranking
        else:
            ranking = only.popular(k)
        rows, scores = most_popular(ranking, self.model.popularity, k)
        if live is not None and live.ranked_by_viewers:
            return rows, live.viewers_of(rows).astype(np.float32)
        return rows, scores


def file_version(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """What tells a replaced file apart: inode, modification time and size (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def last_good(path: str | os.PathLike) -> pathlib.Path:
    """Where workers keep a hard link to the last model file that loaded, beside it."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.last-good")


def load_and_remember(path: str | os.PathLike) -> Recommender:
    """load_model, and a hard link to the file just loaded at last_good(path): a worker started
    while a file that does not load is in place (uvicorn restarts a worker that died; a second
    worker still starting during a rollout) serves that instead of failing its startup, which
    would make uvicorn stop every worker. The link costs disk only once the file is replaced: the
    previous version stays until another loads."""
    before = file_version(path)
    model = load_model(path)
    link = last_good(path)
    if before is None or file_version(path) != before:
        return model  # replaced while it loaded: which version was loaded is not certain
    tmp = link.with_name(f"{link.name}.{os.getpid()}.tmp")
    try:
        os.link(path, tmp)
        if os.stat(tmp).st_ino == before[0]:
            os.replace(tmp, link)
    except OSError as exc:
        log.debug("no last-good link for %s: %s", path, exc)
    finally:
        tmp.unlink(missing_ok=True)
    return model


def load_at_start(path: str | os.PathLike) -> tuple[Recommender, tuple[int, int, int] | None]:
    """(model, the version of `path` that did not load, or None): the model file, or when it does
    not load and a last good one is there, that one, said in one line. Raises ModelError when
    neither loads."""
    try:
        return load_and_remember(path), None
    except ModelError as exc:
        fallback = last_good(path)
        if not fallback.is_file():
            raise
        failed = file_version(path)
        model = load_model(fallback)
        log.error(
            "%s; serving the last model file that loaded (created at %s) until it is replaced",
            exc,
            model.metadata.get("created_at"),
        )
        return model, failed


def load_catalog(settings: Settings, model: Recommender) -> Catalog | None:
    """The streamer catalog of STREAMERS_PATH; when none is set and `model` was trained on the
    demo sessions, theirs; else None. Raises CatalogError."""
    if settings.streamers_path:
        return read_catalog(settings.streamers_path)
    source = str(model.metadata.get("source", ""))
    if source.startswith("demo (") and source.endswith(")"):
        demo = demo_data.catalog_path(source[len("demo (") : -1])
        if demo.is_file():
            return read_catalog(demo)
    return None


class ReloadFailed(Exception):
    """POST /admin/reload could not load the file; the message says what still serves and why."""


class PublishFailed(Exception):
    """PUT /live could not write the live set (the file, or the store); nothing was published."""


class StoreDown(Exception):
    """A write (PUT /live, POST /admin/reload) needs the store, which did not answer; nothing was
    written and nothing changed. The message is one line without the store's password."""


class EventsRefused(Exception):
    """POST /events could not keep the batch (the log is full, cannot be written, or the store
    cannot confirm it is on disk): nothing was acknowledged. One line for a person."""


def version_text(version: int | Version | None) -> str | None:
    """A live set's version as shown: "<epoch>.<number>" (the store's), "file:<mtime_ns>"."""
    if version is None:
        return None
    return format_version(version) if isinstance(version, tuple) else f"file:{version}"


def _plain(folded: Folded | None) -> tuple | None:
    return None if folded is None else tuple(folded)


def newer(version, held) -> bool:
    """Whether a live set's `version` should replace the `held` one: a store's (epoch, number)
    must be later; a file's modification time need only differ (the file is the set)."""
    if held is None:
        return True
    if isinstance(version, tuple) and isinstance(held, tuple):
        return version > held
    return version != held


class Serving:
    """One worker's serving state: the snapshot (`served`), the settings and metrics, the versions
    of the model and live set it has taken up (or refused), and with REDIS_URL its link to the
    fleet (serve/store.py). Methods change it; the routes only read `served` and call them.

    Where the live set comes from: PUT /live on any worker stores it (the store, else the file),
    swaps it in here at once and tells the others (a message, else the file's new time); every
    worker also looks once a second, so a missed message costs at most a second. Each worker then
    ranks its live-only lists in a background thread; until they are in, live-only requests are
    ranked on request among the set. Which model: the file at MODEL_PATH, taken up when replaced;
    with the store, POST /admin/reload on any worker tells every worker of every host to load its
    own copy, and a host whose copy is another model (its header checksum) says so and keeps
    serving the one it has."""

    def __init__(self, settings: Settings, metrics: Metrics, served: ServedModel):
        self.settings = settings
        self.metrics = metrics
        self.served = served  # replaced whole (one assignment), never changed
        self.lock = threading.Lock()  # one swap at a time; requests never wait on it
        self.live_version: int | Version | None = None
        self.live_failed: int | Version | None = None
        self.live_building = False
        self.model_version: tuple[int, int, int] | None = None
        self.model_failed: tuple[int, int, int] | None = None
        self.model_loading = False
        self.ready = False  # the model's pages are in memory (GET /ready)
        self.instance = instance_name(settings)
        self.store: Store | None = None
        self.store_up: bool | None = None  # None: not yet tried
        self.fleet_checksum: str | None = None  # the model the fleet was last asked to serve
        self._announced: str | None = None  # the checksum of this worker's own reload message
        self._look_again = False  # a live-set message came while one was being taken up
        self._tasks: set[asyncio.Task] = set()
        # The event log (POST /events), followed when INGEST_TOKEN is set: the file at EVENTS_PATH,
        # or with REDIS_URL the store's stream; what it holds past the model, per viewer.
        self.events_on = bool(settings.ingest_token)
        self.event_log: FileLog | None = None
        self.held = Held(settings.events_per_viewer, settings.events_max_viewers, settings.events_hold_hours * 3600)
        self.held_lock = threading.Lock()
        self._stream_size: tuple[float, int] | None = None  # (when asked, bytes) of the store's stream

    @classmethod
    def start(cls, settings: Settings, metrics: Metrics, recommender: Recommender | None = None) -> Serving:
        """Load the model file (or take `recommender`, already loaded) and its catalog, and take
        up a live set already published in the file (with REDIS_URL the store's is taken up by
        `open`). Raises ModelError when no model file loads."""
        version, failed = file_version(settings.model_path), None
        if recommender is not None:
            model = recommender
        else:
            model, failed = load_at_start(settings.model_path)
        try:
            catalog = load_catalog(settings, model)
        except CatalogError as exc:  # serve without categories and languages rather than not at all
            log.error("streamer catalog not loaded: %s", exc)
            catalog = None
        served = ServedModel(
            model, codes=catalog_codes(catalog, model.streamers), filter_budget=settings.filter_cache_mb << 20
        )
        serving = cls(settings, metrics, served)
        metrics.model(model)
        serving.model_version, serving.model_failed = (None, failed) if failed else (version, None)
        if not settings.redis_url:
            serving.sync_live(force=True)
            if serving.events_on:
                serving.event_log = FileLog(settings.events_path)
        serving.held.taken_in(events_through(model, serving.log_kind))
        log.info(
            "model loaded: %d users, %d streamers, created %s, checksum %s",
            model.n_users,
            model.n_streamers,
            model.metadata.get("created_at"),
            model.checksum or "-",
        )
        return serving

    async def open(self) -> None:
        """Start what runs beside the requests: reading the model's pages in (then ready), the
        once-a-second watch and, with REDIS_URL, the store: the current live set taken up now if
        the store answers (one line if not: the service serves without it and takes it up when
        the store is back) and its messages listened to."""
        self._spawn_thread(self._warm_up, self.model)
        if self.settings.redis_url:
            self.store = Store(self.settings.redis_url, self.settings.redis_prefix)
            try:
                await self.store.ping()
                self._store_is(True)
                await self._take_up_store_model()
                await self.take_up_store_live()
            except StoreUnavailable as exc:
                self._store_is(False, str(exc))
            self._spawn(self.listen())
        self._spawn(self.watch())
        if self.events_on:
            self._spawn(self.follow_events())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        self.stop()

    def stop(self) -> None:
        self.metrics.flush()
        self.metrics.worker_exit()

    @property
    def model(self) -> Recommender:
        return self.served.model

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _spawn_thread(target, *args) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    # --- ready ------------------------------------------------------------------------------------

    def _warm_up(self, model: Recommender) -> None:
        self._warm(model, "serving")
        self.ready = True

    def _warm(self, model: Recommender, why: str) -> None:
        """Read `model`'s pages in (for at most WARM_SECONDS) and say how long it took."""
        touched, total, seconds = warm(model, self.settings.warm_seconds)
        if total:
            level = logging.INFO if touched == total else logging.WARNING
            log.log(
                level,
                "model pages in memory before %s: %.1f of %.1f MB in %.1f s%s",
                why,
                touched / 2**20,
                total / 2**20,
                seconds,
                "" if touched == total else " (WARM_SECONDS reached; the rest is read on first use)",
            )

    # --- state for /health, /metrics and the fleet ------------------------------------------------

    def state(self) -> dict:
        """What this worker serves, for /health and the fleet."""
        model, live = self.served.model, self.served.live
        return {
            "instance": self.instance,
            "pid": os.getpid(),
            "ready": self.ready,
            "model_created_at": model.metadata.get("created_at"),
            "model_checksum": model.checksum or None,
            "fleet_model_checksum": self.fleet_checksum,
            "live_version": live.version if live is not None else None,
            "live_streamers": len(live) if live is not None else 0,
            "live_lists_ready": not self._lists_wanted(live),
        }

    def _store_is(self, up: bool, why: str = "") -> None:
        """Log the store's state when it changes: one line when it goes, one when it is back."""
        if up and self.store_up is False:
            log.info("the store at %s answers again", self.store.url if self.store else "?")
        elif not up and self.store_up is not False:
            log.error("%s; serving the model and the live set this worker has, retrying with backoff", why)
        self.store_up = up

    # --- reload -----------------------------------------------------------------------------------

    def _load(self) -> tuple[ServedModel, tuple[int, int, int] | None]:
        """The model file and catalog loaded (with the live set carried over, by name) and read into
        memory, not yet served: (snapshot, the file's version). Raises ModelError, CatalogError."""
        settings = self.settings
        version = file_version(settings.model_path)
        new = load_and_remember(settings.model_path)
        served = self.served.for_model(new, load_catalog(settings, new))
        self._warm(new, "the swap")
        return served, version

    def _swap_model(self, served: ServedModel, version: tuple[int, int, int] | None) -> Recommender:
        """Serve `served` (from _load) with the live set served now: the old model."""
        with self.lock:
            old = self.model
            if self.served.live is not None and self.served.live is not served.live:
                # A newer live set was swapped in while the model loaded: carry that one over.
                served = served.with_streams(self.served.live)
            self.served = served  # one assignment: a request sees the old model or the new
            self.model_version, self.model_failed = version, None
        new = served.model
        with self.held_lock:
            self.held.taken_in(events_through(new, self.log_kind))
        self.metrics.reloaded(ok=True)
        self.metrics.model(new)
        self._rank_live_lists(served.live)
        log.info(
            "serving %s: created %s, checksum %s, %d users, %d streamers",
            self.settings.model_path,
            new.metadata.get("created_at"),
            new.checksum or "-",
            new.n_users,
            new.n_streamers,
        )
        return old

    async def reload_everywhere(self) -> tuple[Recommender, Recommender, int | None]:
        """Load the file here; with the store, record its checksum there and tell every worker of
        every host, then swap it in here; without, swap it in here and touch the file so that
        every worker of this host takes it up. (old model, new model, workers the message reached
        or None). Raises ReloadFailed (the file) or StoreDown (the store): the old model keeps
        serving everywhere."""
        if self.store is not None:
            await self._store_call(self.store.ping())
        try:
            served, version = await run_in_threadpool(self._load)
        except (ModelError, CatalogError) as exc:
            self.metrics.reloaded(ok=False)
            why = f"reload failed; still serving the model created at {self.model.metadata.get('created_at')}"
            log.error("%s: %s", why, exc)
            raise ReloadFailed(f"{why}: {exc}") from None
        new = served.model
        reached = None
        if self.store is not None:
            self._announced = new.checksum
            try:
                reached = await self._store_call(
                    self.store.announce_model(new.checksum, new.metadata.get("created_at"))
                )
            except StoreDown:
                self._announced = None
                raise
            self.fleet_checksum = new.checksum
        old = await run_in_threadpool(self._swap_model, served, version)
        if self.store is None:
            # The other workers take up a file whose modification time changed: touch it.
            path = self.settings.model_path
            try:
                os.utime(path)
                self.model_version = file_version(path)
            except OSError as exc:
                log.warning("reloaded this worker only: cannot touch %s (%s)", path, exc)
        return old, new, reached

    async def _store_call(self, call):
        """Await a store call for a write; StoreDown (logged once) when the store does not answer."""
        try:
            result = await call
        except StoreUnavailable as exc:
            self._store_is(False, str(exc))
            raise StoreDown(f"{exc}; nothing was changed") from None
        self._store_is(True)
        return result

    async def take_up_reload(self, checksum: str) -> None:
        """A reload another worker asked for: load this host's file (and catalog) and serve it if it
        is the model asked for (its checksum); if it is another, say so and keep serving the one
        served now."""
        self.fleet_checksum = checksum
        if checksum == self._announced:  # this worker's own reload: done already
            self._announced = None
            return
        if self.model_loading:
            return
        self.model_loading = True
        try:
            await run_in_threadpool(self._take_up_model, file_version(self.settings.model_path))
        finally:
            self.model_loading = False

    async def _take_up_store_model(self) -> None:
        self.fleet_checksum = await self.store.fleet_model() if self.store is not None else None
        if self.fleet_checksum and self.fleet_checksum != self.model.checksum:
            log.error(
                "the fleet serves model %s, %s holds model %s (created at %s): serving it until the file "
                "there is the fleet's (copy it, then POST /admin/reload)",
                self.fleet_checksum,
                self.settings.model_path,
                self.model.checksum or "-",
                self.model.metadata.get("created_at"),
            )

    # --- publish ----------------------------------------------------------------------------------

    async def publish(self, streams: list[LiveStream]) -> LiveSet:
        """Store `streams` as the live set (in the store, else the shared file), which tells every
        other worker, and serve it here at once; its live-only lists are ranked in the background.
        Raises PublishFailed (the file) or StoreDown (the store): then nothing was published."""
        served = await run_in_threadpool(self.served.with_live, streams)
        live = served.live
        assert live is not None
        body = live_body(live.streams, live.since)
        if self.store is not None:
            version: int | Version = await self._store_call(self.store.publish_live(body))
        else:
            path = live_file(self.settings)
            try:
                version = await run_in_threadpool(write_live, path, list(live.streams), live.since)
            except OSError as exc:
                why = f"cannot write the live set to {path} ({exc.strerror or exc}); nothing was published"
                raise PublishFailed(why) from None
        await run_in_threadpool(self._swap_live, served, version)
        return live.with_version(version_text(version))

    def _swap_live(self, served: ServedModel, version: int | Version) -> None:
        """Serve `served` (a snapshot with a new live set, its lists not yet ranked) unless a newer
        set is served already; then rank its lists in the background."""
        with self.lock:
            if not newer(version, self.live_version):
                return
            if served.model is not self.model:  # the model was swapped meanwhile: this set on it
                served = self.served.with_streams(served.live)
            self.live_version, self.live_failed = version, None
            text = version_text(version)
            if served.live is not None:
                served = served.with_live_lists(served.live.with_version(text))
            self.served = served
        live = served.live
        self.metrics.live(live)
        self.metrics.live_version(text)
        if live is not None:
            log.info("live set %s: %d streamers (%d unknown names)", text, len(live), live.unknown)
        self._rank_live_lists(live)

    @staticmethod
    def _lists_missing(live: LiveSet | None) -> TypeGuard[LiveSet]:
        """Whether `live` is a non-empty set without live-only lists yet."""
        return live is not None and live.lists is None and len(live) > 0

    def _lists_wanted(self, live: LiveSet | None) -> bool:
        """Whether `live` is to get lists ranked in advance and has none yet."""
        return self._lists_missing(live) and self.model.n_users * len(live) <= LIVE_LISTS_MAX_PAIRS

    def _rank_live_lists(self, live: LiveSet | None) -> None:
        """Rank `live`'s lists in a background thread (one core: the other serves), if worth it."""
        if not self._lists_missing(live):
            return
        if not self._lists_wanted(live):
            log.info(
                "live-only lists not ranked in advance for %d viewers x %d live streamers (over %d pairs): "
                "live-only requests are ranked on request",
                self.model.n_users,
                len(live),
                LIVE_LISTS_MAX_PAIRS,
            )
            return
        self._spawn_thread(self._add_live_lists, self.model, live)

    def _add_live_lists(self, model: Recommender, live: LiveSet) -> None:
        """Rank every viewer's live-only lists for `live` and add them to the snapshot, unless
        another set or model is served by then (the work stops early)."""

        def superseded() -> bool:
            return self.served.live is not live

        # The lowest priority for this thread alone (Linux schedules threads): requests and the
        # take-up of the next set come first; the lists come when the cores are free.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            lists = live_lists(model, live.rows, stop=superseded, threads=1)
        except Exception:  # noqa: BLE001 - requests keep being ranked on request
            log.exception("live-only lists not ranked; ranking live-only requests on request")
            return
        if lists is None:
            return
        with self.lock:
            if not superseded():
                self.served = self.served.with_live_lists(live.with_lists(lists))

    # --- events -----------------------------------------------------------------------------------

    @property
    def log_kind(self) -> str:
        return "redis" if self.settings.redis_url else "file"

    def held_sessions(self, user_id: str) -> list[tuple[str, int, int]] | None:
        """The viewer's sessions from the event log that the served model has not taken in (None:
        none; the common case costs one dict lookup)."""
        return self.held.sessions(user_id) if self.held.viewers else None

    def _take(self, chunk: Chunk, advance: bool = True) -> None:
        model = self.model
        with self.held_lock:
            self.held.take(chunk, known=lambda name: model.streamers.get(name) is not None, advance=advance)

    async def ingest(self, body: bytes) -> tuple[Batch, int | str | None]:
        """Check a POST /events body, write its usable sessions to the event log (durably: synced
        to disk, here or in the store) and hold them for this worker's next request: (the batch,
        its position in the log; None when nothing was usable). Raises BatchInvalid (nothing
        kept), EventsRefused or StoreDown (nothing acknowledged)."""
        settings, model = self.settings, self.model
        time_format = model.metadata.get("time_format", INTEGER)
        if time_format == INTEGER:
            latest = max(model.time_max, self.held.newest_time or model.time_max) + settings.events_skew
        else:
            latest = int(time.time()) + settings.events_skew
        batch = await run_in_threadpool(parse_batch, body, time_format, latest, settings.events_batch_max)
        if not len(batch):
            self.metrics.events(batch, "accepted")
            return batch, None
        rows = batch.rows()
        cap = settings.events_max_mb << 20
        try:
            if self.store is not None:
                # the stream's size, asked at most once a second (the cap needs no more precision)
                now = time.monotonic()
                if self._stream_size is None or now - self._stream_size[0] > 1.0:
                    self._stream_size = (now, await self._store_call(self.store.events_bytes()))
                self._check_cap(self._stream_size[1], cap)
                position: int | str = await self._store_call(self.store.append_sessions(rows))
            else:
                assert self.event_log is not None, "the file log is set up when ingest is on"
                position = await run_in_threadpool(self._append_file, rows, cap)
        except (EventsRefused, StoreDown) as exc:
            self.metrics.events(batch, "refused")
            raise EventsRefused(str(exc)) from None
        except NotDurable as exc:
            self.metrics.events(batch, "refused")
            log.error("%s", exc)
            raise EventsRefused(str(exc)) from None
        self._take(Chunk([(position, r) for r in rows], position=position), advance=False)
        self.metrics.events(batch, "accepted")
        return batch, position

    def _append_file(self, rows: list[tuple[str, str, int, int]], cap: int) -> int:
        assert self.event_log is not None
        try:
            self._check_cap(self.event_log.size(), cap)
            return self.event_log.append(rows)
        except EventLogError as exc:
            log.error("%s", exc)
            raise EventsRefused(f"{exc}; nothing was acknowledged") from None

    def _check_cap(self, size: int, cap: int) -> None:
        if size >= cap:
            raise EventsRefused(
                f"the event log holds {size / 2**20:,.0f} MB, its cap (EVENTS_MAX_MB) is {cap / 2**20:,.0f} MB: "
                "run python als_fit.py --update --events, which takes it into the model and trims it; "
                "nothing was acknowledged"
            )

    async def forget_viewer(self, uid: str) -> int:
        """Delete viewer `uid`'s sessions from the event log and from what every worker holds:
        how many sessions were deleted from the log. Raises EventsRefused or StoreDown."""
        if self.store is not None:
            deleted = await self._store_call(self.store.forget_sessions(uid))
        else:
            assert self.event_log is not None, "the file log is set up when ingest is on"
            try:
                deleted = await run_in_threadpool(self.event_log.forget, uid)
            except EventLogError as exc:
                raise EventsRefused(str(exc)) from None
        with self.held_lock:
            self.held.forget(uid)
        log.info("deleted %d sessions of one viewer from the event log", deleted)
        return deleted

    async def follow_events(self) -> None:
        """Read the event log as it grows (the file every EVENTS_POLL_SECONDS, the store's stream
        as entries come) and hold what the served model has not taken in. From the model's
        position at startup: a restarted worker holds what it held before."""
        delay = 0.1
        while True:
            try:
                if self.store is not None:
                    chunk = await self.store.sessions_after(
                        None if self.held.position is None else str(self.held.position),
                        block_ms=int(LIVE_CHECK_SECONDS * 1000),
                        count=EVENTS_READ_ENTRIES,
                    )
                else:
                    assert self.event_log is not None
                    after = self.held.position if isinstance(self.held.position, int) else None
                    chunk = await run_in_threadpool(self.event_log.read, after, EVENTS_READ_BYTES)
                delay = 0.1
            except StoreUnavailable as exc:
                self._store_is(False, str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # noqa: BLE001 - the follower must outlive a bad read
                log.exception("could not read the event log; trying again")
                await asyncio.sleep(LIVE_CHECK_SECONDS)
                continue
            if chunk.position is not None:
                self._take(chunk)
            elif self.store is None:
                await asyncio.sleep(EVENTS_POLL_SECONDS)

    # --- watch ------------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Every LIVE_CHECK_SECONDS: this worker's request tallies added to the metrics, one stat of
        the model file (and of the live file, without the store) on the event loop, and with the
        store one round trip: this worker's heartbeat and the live set's version (a message missed
        is caught here). What changed is taken up in a background thread."""
        while True:
            await asyncio.sleep(LIVE_CHECK_SECONDS)
            self.metrics.flush()
            if self.events_on:
                with self.held_lock:
                    self.held.expire()
                self.metrics.events_state(self.held.pending, self.held.newest_time, self.model.time_max)
            try:
                if self.store is None:
                    self.sync_live()
                self.sync_model()
                if self.store is not None:
                    await self._beat()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad file
                log.exception("could not take up a published live set or model file")

    async def _beat(self) -> None:
        assert self.store is not None
        was_up = self.store_up
        try:
            version = await self.store.heartbeat(f"{self.instance}/{os.getpid()}", self.state())
        except StoreUnavailable as exc:
            self._store_is(False, str(exc))
            return
        self._store_is(True)
        if not was_up:
            await self._take_up_store_model()
        if version is not None and newer(version, self.live_version) and version != self.live_failed:
            self._spawn(self.take_up_store_live())

    async def listen(self) -> None:
        """The store's messages: a live set published, a reload asked for. Reconnects with backoff
        (0.1 s doubling to 5 s) and then looks for a set published while it was away."""
        assert self.store is not None
        delay = 0.1
        while True:
            pubsub = self.store.pubsub()
            try:
                await pubsub.subscribe(self.store.channel)
                if self.store_up is False:
                    await self.store.ping()  # subscribing may not have reached it yet
                    self._store_is(True)
                    await self._take_up_store_model()
                    self._spawn(self.take_up_store_live())
                delay = 0.1
                async for message in pubsub.listen():
                    parsed = parse_message(message.get("data", b""))
                    if parsed is None:
                        continue
                    if parsed.kind == "live":
                        version = parse_version(parsed.value)
                        if version is not None and newer(version, self.live_version):
                            self._spawn(self.take_up_store_live())
                    else:
                        self._spawn(self.take_up_reload(parsed.value))
            except (RedisError, OSError) as exc:
                self._store_is(False, str(self.store.unavailable(exc)))
            except StoreUnavailable as exc:
                self._store_is(False, str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def take_up_store_live(self) -> None:
        """Take up the live set in the store if it is newer than the one served. A set that does not
        validate is one log line per version, and the set served stays."""
        if self.store is None:
            return
        if self.live_building:
            self._look_again = True  # a newer set may have come meanwhile: looked for when done
            return
        self.live_building, self._look_again = True, False
        version: Version | None = None
        try:
            version = await self.store.live_version()
            if version is None or not newer(version, self.live_version) or version == self.live_failed:
                return
            stored = await self.store.live(live_file_limit(self.settings.max_body_bytes))
            if stored is None:
                return
            version, body = stored  # newer still, if another was published in between
            if not newer(version, self.live_version) or version == self.live_failed:
                return
            refusal = f"the live set in the store (version {format_version(version)}) is not one"
            streams, since = await run_in_threadpool(parse_live, body, refusal)
            served = await run_in_threadpool(self.served.with_live, streams, since)
            await run_in_threadpool(self._swap_live, served, version)
        except StoreUnavailable as exc:
            self._store_is(False, str(exc))
        except (LiveFileError, ValueError) as exc:
            self.live_failed = version
            log.error("live set not taken up; %s: %s", self._serving_live(), " ".join(str(exc).split())[:300])
        finally:
            self.live_building = False
            if self._look_again:
                self._spawn(self.take_up_store_live())

    def sync_live(self, force: bool = False) -> None:
        """Take up a live set that another worker published: if the shared file is newer than the
        one this worker serves, read it in a background thread and swap it in (`force`: right here,
        as at startup)."""
        try:
            version = live_file(self.settings).stat().st_mtime_ns
        except OSError:
            return
        if version in (self.live_version, self.live_failed) or self.live_building:
            return
        self.live_building = True
        if force:
            self._take_up_live(version)
        else:
            self._spawn_thread(self._take_up_live, version)

    def sync_model(self) -> None:
        """Take up a model file that replaced the one this worker serves (a retrain, an update, or
        POST /admin/reload on another worker): load it in a background thread and swap it in. A file
        that does not load is logged once and skipped until it changes again."""
        version = file_version(self.settings.model_path)
        if version is None or version in (self.model_version, self.model_failed) or self.model_loading:
            return
        self.model_loading = True

        def take_up() -> None:
            try:
                self._take_up_model(version)
            finally:
                self.model_loading = False

        self._spawn_thread(take_up)

    def _take_up_model(self, version: tuple[int, int, int] | None) -> None:
        """Load the model file (`version` when looked at) and serve it; with a fleet model recorded
        in the store, only if it is that model."""
        try:
            served, version = self._load()
            new = served.model
            expected = self.fleet_checksum if self.store is not None else None
            if expected and new.checksum != expected:
                self.model_failed = version
                log.error(
                    "%s holds model %s (created at %s), the fleet serves %s: still serving %s (created at %s) "
                    "until the file here is the fleet's",
                    self.settings.model_path,
                    new.checksum,
                    new.metadata.get("created_at"),
                    expected,
                    self.model.checksum or "-",
                    self.model.metadata.get("created_at"),
                )
                return
            self._swap_model(served, version)  # the same model too: the catalog may have changed
        except (ModelError, CatalogError) as exc:
            self.model_failed = version
            self.metrics.reloaded(ok=False)
            log.error(
                "model file replaced but not loaded; still serving the model created at %s: %s",
                self.model.metadata.get("created_at"),
                exc,
            )
        except Exception:  # noqa: BLE001 - a bug, not a bad file: logged in full, once per file version
            self.model_failed = version
            log.exception("model file replaced but not loaded; still serving the model it had")

    def _take_up_live(self, seen: int) -> None:
        """Read the live-set file (version `seen` when it was looked at) and swap its set in. A file
        that does not validate is one log line, and skipped until it changes: the set served stays."""
        try:
            published = read_live(live_file(self.settings), live_file_limit(self.settings.max_body_bytes))
            if published is None:
                return
            streams, since, version = published
            if version != self.live_version:
                self._swap_live(self.served.with_live(streams, since), version)
        except LiveFileError as exc:
            self.live_failed = seen
            log.error("live set not taken up; %s: %s", self._serving_live(), exc)
        except Exception:  # noqa: BLE001 - a bug, not a bad file: logged in full, once per file version
            self.live_failed = seen
            log.exception("live set not taken up; %s", self._serving_live())
        finally:
            self.live_building = False

    def _serving_live(self) -> str:
        live = self.served.live
        return "serving no live set" if live is None else f"still serving the set published at {live.since.isoformat()}"

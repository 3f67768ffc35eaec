"""What one worker serves and how it changes, with no HTTP in it: the snapshot a request reads
(`ServedModel`: model, live set, catalog codes, name cache, filter cache) and `Serving`, which
holds it with the settings and metrics and replaces it: reload, publish, watch.

Every user's ranked lists are computed at training time, so an answer is a slice and a JSON string.
A new model or live set swaps in with one reference assignment: a request holds the snapshot it
started with until it finishes, so none fails during a swap, and a file that fails to load leaves
the old snapshot serving. Every worker maps the model file (one copy in the page cache for all) and
checks it and the live-set file once a second: a replaced file is loaded (a live set ranked) in a
background thread and swapped in. The old model stays mapped, valid, until the last request that
holds it finishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import threading
from datetime import datetime
from json.encoder import encode_basestring_ascii as encode_json_string  # what json.dumps(str) does, in C

import numpy as np

from streamrec.data import demo as demo_data
from streamrec.data.catalog import Catalog, CatalogError, Codes, catalog_codes, read_catalog
from streamrec.model.model_file import ModelError, load_model
from streamrec.model.popular import most_popular, top_up
from streamrec.model.recommender import Recommender
from streamrec.model.scoring import PERSONAL, POPULAR, RECENT, rank, rank_recent
from streamrec.serve.filters import FilterCache, Passing, filter_key, gather
from streamrec.serve.live import LiveFileError, LiveSet, LiveStream, live_file_limit, read_live, write_live
from streamrec.serve.monitoring import Metrics
from streamrec.settings import Settings, live_file

log = logging.getLogger("service")

LIVE_CHECK_SECONDS = 1.0  # how often a worker looks for a live set or model file another published
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
    ):
        self.model = model
        self.live = live
        # Category and language per streamer row: the catalog's (STREAMERS_PATH); a live set's
        # are the catalog's with what was published for the live streamers over them.
        self.catalog_codes = codes if codes is not None else Codes.empty(model.n_streamers)
        self.filters = FilterCache(filter_budget)
        self._names: dict[int, str] = names_cache if names_cache is not None else {}
        model.history_bonus  # noqa: B018 - derived now, not inside the first request that needs it

    def with_live(self, streams: list[LiveStream], since: datetime | None = None) -> ServedModel:
        live = LiveSet.build(self.model, streams, since, codes=self.catalog_codes)
        return ServedModel(self.model, live, self._names, self.catalog_codes, self.filters.budget)

    def for_model(self, model: Recommender, catalog: Catalog | None) -> ServedModel:
        """The same live streamers (by name, with their metadata) on another model and catalog."""
        codes = catalog_codes(catalog, model.streamers)
        old = self.live
        live = LiveSet.build(model, list(old.streams), old.since, codes=codes) if old is not None else None
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
    ) -> tuple[str, np.ndarray, np.ndarray]:
        """(source, streamer rows, scores) for any viewer: known to the model (personal), known by
        `recent` streamers (recent), or neither (popular). Raises NoLiveSet for live_only without a
        live set. With `categories` or `languages`, every source ranks only the streamers that
        pass, and the answer holds min(k, streamers that pass) of them, topped up with the most
        popular that pass."""
        model, live = self.model, self.live if live_only else None
        if live_only and live is None:
            raise NoLiveSet
        only = self.filtered(categories or [], languages or [], live_only) if categories or languages else None
        row = model.users.get(user_id)
        result, seen = None, None
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
                )
                seen = model.history(row)[0] if exclude_watched else None
            elif live is not None:
                result = rank(model, row, k, exclude_watched, among=live.candidates, live=True, lists=live.lists)
            else:
                result = rank(model, row, k, exclude_watched)
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
    """PUT /live could not write the shared live-set file; nothing was published."""


class Serving:
    """One worker's serving state: the snapshot (`served`), the settings and metrics, and the
    versions of the model and live-set files it has taken up (or failed to). Methods change it;
    the routes only read `served` and call them."""

    def __init__(self, settings: Settings, metrics: Metrics, served: ServedModel):
        self.settings = settings
        self.metrics = metrics
        self.served = served  # replaced whole (one assignment), never changed
        self.lock = threading.Lock()  # one reload or publish at a time; requests never wait on it
        self.live_version: int | None = None
        self.live_failed: int | None = None
        self.live_building = False
        self.model_version: tuple[int, int, int] | None = None
        self.model_failed: tuple[int, int, int] | None = None
        self.model_loading = False

    @classmethod
    def start(cls, settings: Settings, metrics: Metrics, recommender: Recommender | None = None) -> Serving:
        """Load the model file (or take `recommender`, already loaded) and its catalog, and take
        up a live set already published. Raises ModelError when no model file loads."""
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
        serving.sync_live(force=True)
        log.info(
            "model loaded: %d users, %d streamers, created %s",
            model.n_users,
            model.n_streamers,
            model.metadata.get("created_at"),
        )
        return serving

    def stop(self) -> None:
        self.metrics.flush()
        self.metrics.worker_exit()

    @property
    def model(self) -> Recommender:
        return self.served.model

    # --- reload -----------------------------------------------------------------------------------

    def reload(self) -> tuple[Recommender, Recommender]:
        """Load the model file and catalog again and swap them in, with the live set carried over:
        (old model, new model). Call with the lock held. Raises ModelError, CatalogError and
        leaves the served model as it was."""
        settings = self.settings
        old = self.model
        try:
            new = load_and_remember(settings.model_path)
            served = self.served.for_model(new, load_catalog(settings, new))
        except (ModelError, CatalogError):
            self.metrics.reloaded(ok=False)
            raise
        self.served = served  # one assignment: a request sees the old model or the new
        self.metrics.reloaded(ok=True)
        self.metrics.model(new)
        log.info(
            "serving %s: created %s, %d users, %d streamers",
            settings.model_path,
            new.metadata.get("created_at"),
            new.n_users,
            new.n_streamers,
        )
        return old, new

    def reload_everywhere(self) -> tuple[Recommender, Recommender]:
        """Reload here at once, then touch the file so that every other worker takes it up:
        (old model, new model). Raises ReloadFailed; the old model keeps serving."""
        path = self.settings.model_path
        with self.lock:
            try:
                old, new = self.reload()
            except (ModelError, CatalogError) as exc:
                why = f"reload failed; still serving the model created at {self.model.metadata.get('created_at')}"
                log.error("%s: %s", why, exc)
                raise ReloadFailed(f"{why}: {exc}") from None
            # The other workers take up a file whose modification time changed: touch it.
            try:
                os.utime(path)
            except OSError as exc:
                log.warning("reloaded this worker only: cannot touch %s (%s)", path, exc)
            self.model_version, self.model_failed = file_version(path), None
        return old, new

    # --- publish ----------------------------------------------------------------------------------

    def publish(self, streams: list[LiveStream]) -> LiveSet:
        """Rank `streams` as the live set, write it to the shared file for the other workers and
        swap it in here at once. Raises PublishFailed when the file cannot be written: then nothing
        is published."""
        with self.lock:  # against a concurrent reload swapping the model underneath
            served = self.served.with_live(streams)
            live = served.live
            assert live is not None
            path = live_file(self.settings)
            try:
                self.live_version = write_live(path, list(live.streams), live.since)
            except OSError as exc:
                why = f"cannot write the live set to {path} ({exc.strerror or exc}); nothing was published"
                raise PublishFailed(why) from None
            self.served = served
        self.metrics.live(live)
        log.info("live set: %d streamers (%d unknown names)", len(live), live.unknown)
        return live

    # --- watch ------------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Every LIVE_CHECK_SECONDS: one stat of the live file and one of the model file, on the
        event loop (what changed is taken up in a background thread), and this worker's request
        tallies added to the metrics."""
        while True:
            await asyncio.sleep(LIVE_CHECK_SECONDS)
            self.metrics.flush()
            try:
                self.sync_live()
                self.sync_model()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad file
                log.exception("could not take up a published live set or model file")

    def sync_live(self, force: bool = False) -> None:
        """Take up a live set that another worker published: if the shared file is newer than the
        one this worker serves, rank it in a background thread and swap it in when ready (`force`:
        right here, as at startup)."""
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
            threading.Thread(target=self._take_up_live, args=(version,), daemon=True).start()

    def sync_model(self) -> None:
        """Take up a model file that replaced the one this worker serves (a retrain, an update, or
        POST /admin/reload on another worker): load it in a background thread and swap it in. A file
        that does not load is logged once and skipped until it changes again."""
        version = file_version(self.settings.model_path)
        if version is None or version in (self.model_version, self.model_failed) or self.model_loading:
            return
        self.model_loading = True
        threading.Thread(target=self._take_up_model, args=(version,), daemon=True).start()

    def _take_up_model(self, version: tuple[int, int, int]) -> None:
        try:
            with self.lock:
                if version != self.model_version:
                    self.reload()
                    self.model_version = version
        except (ModelError, CatalogError) as exc:
            self.model_failed = version
            log.error(
                "model file replaced but not loaded; still serving the model created at %s: %s",
                self.model.metadata.get("created_at"),
                exc,
            )
        except Exception:  # noqa: BLE001 - a bug, not a bad file: logged in full, once per file version
            self.model_failed = version
            log.exception("model file replaced but not loaded; still serving the model it had")
        finally:
            self.model_loading = False

    def _take_up_live(self, seen: int) -> None:
        """Read the live-set file (version `seen` when it was looked at) and swap its set in. A file
        that does not validate is one log line, and skipped until it changes: the set served stays."""
        try:
            published = read_live(live_file(self.settings), live_file_limit(self.settings.max_body_bytes))
            if published is None:
                return
            streams, since, version = published
            with self.lock:
                if version != self.live_version:
                    self.served = self.served.with_live(streams, since)
                    self.live_version = version
            self.metrics.live(self.served.live)
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

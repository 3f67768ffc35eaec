"""The HTTP service: FastAPI app serving recommendations from one loaded model.

    python platform.py                 # the usual way (checks the model first)
    uvicorn service:app --workers 4    # also works: MODEL_PATH from the environment or .env

The model is loaded once, in the lifespan handler, and kept on `app.state.served` (tests hand a
model to `create_app` instead of a path). Every user's ranked lists are computed at training
time, so a request is a slice and a JSON string: it runs on the event loop.

A new model swaps in with one reference assignment: a request holds the model it started with
until it finishes, so none fails during a swap, and a file that fails to load leaves the old
model serving. Every worker maps the model file (one copy in the page cache for all) and checks
it once a second: a replaced file (a retrain, `als_fit.py --update`) is loaded in a background
thread and swapped in, the live set carried over. `POST /admin/reload` does it at once in the
worker that answers and touches the file so that the others follow. Admin endpoints need
`Authorization: Bearer <ADMIN_TOKEN>` (checked before a body is read: guards.py) and are off
(404) when no token is set. The old model stays mapped, valid, until the last request that holds
it finishes. `GET /metrics`: monitoring.py.

`PUT /live` publishes the live streamers. The set is written to a file (`LIVE_PATH`) that every
worker checks once a second, ranking a newer set in a background thread before swapping it in,
so all workers serve the same set within about a second plus its ranking time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import sys
import threading
from contextlib import asynccontextmanager
from datetime import datetime
from json.encoder import encode_basestring_ascii as encode_json_string  # what json.dumps(str) does, in C
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

import demo_data
from catalog import Catalog, CatalogError, Codes, catalog_codes, read_catalog
from filters import FilterCache, Passing, filter_key, gather
from guards import Guard, admin_refusal, refusal_headers
from live import LiveFileError, LiveSet, LiveStream, LiveUpdate, live_file_limit, read_live, write_live
from model_file import ModelError, load_model
from monitoring import CONTENT_TYPE, Metrics, RequestMetrics, exposition
from recommender import PERSONAL, POPULAR, RECENT, Recommender
from settings import Settings, SettingsError, check_service, get_settings, live_file

log = logging.getLogger("service")

MAX_K = 100
MAX_RECENT = 500  # recent streamer names used per request; more are ignored
LIVE_CHECK_SECONDS = 1.0  # how often a worker looks for a live set another worker published
NAME_CACHE = 100_000  # JSON-encoded streamer names kept per worker (about 10 MB); then started afresh


class Recommendation(BaseModel):
    streamer_name: str
    score: float = Field(description="higher is better; comparable within one response only")


class RecommendationResponse(BaseModel):
    user_id: str
    source: Literal["personal", "popular", "recent"] = Field(
        description="personal: ranked for a viewer the model knows; recent: ranked from the `recent` "
        "streamers of a viewer it does not know; popular: neither"
    )
    recommendations: list[Recommendation]


class SimilarResponse(BaseModel):
    streamer_name: str
    similar: list[Recommendation]


class LiveStatus(BaseModel):
    live: int = Field(description="live streamers the model knows")
    unknown: int = Field(description="published names the model does not know (left out)")
    since: str | None = Field(description="when this live set was published")
    categories: dict[str, int] = Field({}, description="live streamers per category, where it is known")
    languages: dict[str, int] = Field({}, description="live streamers per language, where it is known")


class Health(BaseModel):
    status: Literal["ok"]
    worker_pid: int = Field(description="the worker process that answered")
    model_loaded: bool
    created_at: str | None
    users: int
    streamers: int


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    created_at: str | None
    previous_created_at: str | None
    users: int
    streamers: int


class ErrorDetail(BaseModel):
    detail: str


class NoLiveSet(Exception):
    """live_only was asked for before any live set was published."""


def split_values(text: str | None) -> list[str]:
    """`a, b,,c` -> ["a", "b", "c"]: a comma-separated query value."""
    return [v.strip() for v in text.split(",") if v.strip()] if text else []


def filter_values(name: str, text: str | None, settings: Settings) -> list[str]:
    """A category= or language= value as its values; more of them, or longer ones, than the
    settings allow are a 422 naming the parameter (in FastAPI's own shape of a 422)."""
    values = split_values(text)
    most, longest = settings.max_filter_values, settings.max_filter_value_length
    if len(values) > most or any(len(v) > longest for v in values):
        found = max(len(v) for v in values)
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", name),
                    "msg": f"expected at most {most} comma-separated values of at most {longest} characters "
                    f"(MAX_FILTER_VALUES, MAX_FILTER_VALUE_LENGTH); found {len(values)}, the longest {found}",
                    "input": text[:100],
                }
            ]
        )
    return values


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
        live = LiveSet.build(model, list(self.live.streams), self.live.since, codes=codes) if self.live else None
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
        if live_only:
            live = self.live
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

    def answer(
        self,
        user_id: str,
        k: int,
        exclude_watched: bool,
        live_only: bool = False,
        recent: list[str] | None = None,
        categories: list[str] | None = None,
        languages: list[str] | None = None,
    ) -> tuple[str, bytes]:
        """(source, the JSON body of RecommendationResponse). Raises NoLiveSet for live_only
        without a live set. With `categories` or `languages`, every source ranks only the
        streamers that pass, and the answer holds min(k, streamers that pass) of them."""
        model, live = self.model, self.live
        if live_only and live is None:
            raise NoLiveSet
        only = self.filtered(categories or [], languages or [], live_only) if categories or languages else None
        row = model.users.get(user_id)
        result, seen = None, None
        if row is not None:
            source = PERSONAL
            if only is not None:
                result = self._personal_filtered(row, k, exclude_watched, live_only, only)
                seen = model.history(row)[0] if exclude_watched else None
            elif live_only:
                result = live.recommend(model, row, k, exclude_watched)
            else:
                result = model.recommend(row, k, exclude_watched)
        elif recent:
            source = RECENT
            candidates = live.candidates if live_only else None
            result = model.recommend_recent(recent, k, exclude_watched, candidates, None if only is None else only.mask)
            if result is not None and exclude_watched:
                seen = model.streamers.rows(recent)
        if result is None:
            source = POPULAR
            result = self._popular(k, live_only, only)
        elif only is not None and len(result[0]) < k:
            result = self._top_up(result, k, only, seen)
        items = self.items_json(*result)
        return source, f'{{"user_id":{json.dumps(user_id)},"source":"{source}","recommendations":[{items}]}}'.encode()

    def _personal_filtered(
        self, row: int, k: int, exclude_watched: bool, live_only: bool, only: Passing
    ) -> tuple[np.ndarray, np.ndarray]:
        """A known viewer's ranking among the streamers that pass: the stored list with the rest
        left out when that still gives k, else the same ranking on request among them."""
        model, live = self.model, self.live
        lists = live.lists if live_only else model.lists
        # The stored list (30 long; 20 live) is tried when k of it are expected to pass (a third
        # of the catalog, or of the live set, or more): a wide filter such as a big language is
        # then a slice. A narrower one is ranked on request among the streamers that pass.
        if lists is not None and only.share * lists["all"][0].shape[1] >= k:
            ids, scores = lists["new" if exclude_watched else "all"]
            top = ids[row]
            ok = top >= 0
            ok[ok] = only.mask[top[ok]]
            if np.count_nonzero(ok) >= k:
                picked = np.flatnonzero(ok)[:k]
                return top[picked], scores[row, picked]
        if live_only:
            return model.recommend_passing(row, only.candidates, only.mask, k, exclude_watched, live=live.mask)
        return model.recommend_passing(row, only.candidates, only.mask, k, exclude_watched)

    def _popular(self, k: int, live_only: bool, only: Passing | None) -> tuple[np.ndarray, np.ndarray]:
        """The popular list (of the live streamers with live_only: by viewers now when those
        were published), of the streamers that pass `only` if given."""
        if only is None:
            ranking = self.live.popular if live_only else None
        else:
            ranking = only.popular(k)
        rows, scores = self.model.recommend_popular(k, ranking)
        return rows, self._popular_scores(rows, scores, live_only)

    def _popular_scores(self, rows: np.ndarray, scores: np.ndarray, live_only: bool) -> np.ndarray:
        if live_only and self.live.ranked_by_viewers:
            return self.live.viewers_of(rows).astype(np.float32)
        return scores

    def _top_up(
        self,
        result: tuple[np.ndarray, np.ndarray],
        k: int,
        only: Passing,
        seen: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A filtered ranking shorter than k (few of the catalog pass) completed with the popular
        streamers that pass, scored below it; never one already listed or, with `seen`, watched."""
        rows, scores = result
        skip = rows if seen is None else np.concatenate([rows, seen[seen >= 0]])
        ranking = only.popular(k + len(skip))
        if not len(ranking):
            return result
        extra, _ = self.model.recommend_popular(k - len(rows), ranking, exclude=skip)
        floor = float(scores[-1]) if len(scores) else 0.0
        return np.concatenate([rows, extra]), np.concatenate([scores, floor - 1.0 - np.arange(len(extra))])


_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN from the settings")


def require_admin(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The admin token, checked again here (Guard checks it before any body is read); the
    HTTPBearer dependency only documents the scheme in the OpenAPI schema."""
    refusal = admin_refusal(request.app.state.settings.admin_token, request.headers.get("authorization"))
    if refusal is not None:
        raise HTTPException(refusal[0], refusal[1], headers=refusal_headers(refusal[0]) or None)


ADMIN_RESPONSES = {
    401: {"model": ErrorDetail, "description": "no bearer token"},
    403: {"model": ErrorDetail, "description": "wrong token"},
    404: {"model": ErrorDetail, "description": "admin endpoints are off (no ADMIN_TOKEN set)"},
}


def sync_live(app: FastAPI, force: bool = False) -> None:
    """Take up a live set that another worker published: if the shared file is newer than the
    one this worker serves, rank it in a background thread and swap it in when ready (`force`:
    right here, as at startup)."""
    state = app.state
    try:
        version = live_file(state.settings).stat().st_mtime_ns
    except OSError:
        return
    if version in (state.live_version, state.live_failed) or state.live_building:
        return
    state.live_building = True
    if force:
        _take_up_live(app, version)
    else:
        threading.Thread(target=_take_up_live, args=(app, version), daemon=True).start()


def file_version(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """What tells a replaced file apart: inode, modification time and size (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def sync_model(app: FastAPI) -> None:
    """Take up a model file that replaced the one this worker serves (a retrain, an update, or
    POST /admin/reload on another worker): load it in a background thread and swap it in. A file
    that does not load is logged once and skipped until it changes again."""
    state = app.state
    version = file_version(state.settings.model_path)
    if version is None or version in (state.model_version, state.model_failed) or state.model_loading:
        return
    state.model_loading = True
    threading.Thread(target=_take_up_model, args=(app, version), daemon=True).start()


def _take_up_model(app: FastAPI, version: tuple[int, int, int]) -> None:
    state = app.state
    try:
        with state.reload_lock:
            if version != state.model_version:
                reload_served(app)
                state.model_version = version
    except (ModelError, CatalogError) as exc:
        state.model_failed = version
        log.error(
            "model file replaced but not loaded; still serving the model created at %s: %s",
            state.served.model.metadata.get("created_at"),
            exc,
        )
    except Exception:  # noqa: BLE001 - a bug, not a bad file: logged in full, once per file version
        state.model_failed = version
        log.exception("model file replaced but not loaded; still serving the model it had")
    finally:
        state.model_loading = False


def reload_served(app: FastAPI) -> tuple[Recommender, Recommender]:
    """Load the model file and catalog again and swap them in, with the live set carried over:
    (old model, new model). Call with the reload lock held. Raises ModelError, CatalogError and
    leaves the served model as it was."""
    state = app.state
    settings: Settings = state.settings
    old: Recommender = state.served.model
    try:
        new = load_and_remember(settings.model_path)
        served = state.served.for_model(new, load_catalog(settings, new))
    except (ModelError, CatalogError):
        state.metrics.reloaded(ok=False)
        raise
    state.served = served  # one assignment: a request sees the old model or the new
    state.metrics.reloaded(ok=True)
    state.metrics.model(new)
    log.info(
        "serving %s: created %s, %d users, %d streamers",
        settings.model_path,
        new.metadata.get("created_at"),
        new.n_users,
        new.n_streamers,
    )
    return old, new


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


async def watch_files(app: FastAPI) -> None:
    """Every LIVE_CHECK_SECONDS: one stat of the live file and one of the model file, on the
    event loop (what changed is taken up in a background thread), and this worker's request
    tallies added to the metrics."""
    while True:
        await asyncio.sleep(LIVE_CHECK_SECONDS)
        app.state.metrics.flush()
        try:
            sync_live(app)
            sync_model(app)
        except Exception:  # noqa: BLE001 - the watcher must outlive a bad file
            log.exception("could not take up a published live set or model file")


def _take_up_live(app: FastAPI, seen: int) -> None:
    """Read the live-set file (version `seen` when it was looked at) and swap its set in. A file
    that does not validate is one log line, and skipped until it changes: the set served stays."""
    state = app.state
    settings: Settings = state.settings
    try:
        published = read_live(live_file(settings), live_file_limit(settings.max_body_bytes))
        if published is None:
            return
        streams, since, version = published
        with state.reload_lock:
            if version != state.live_version:
                state.served = state.served.with_live(streams, since)
                state.live_version = version
        state.metrics.live(state.served.live)
    except LiveFileError as exc:
        state.live_failed = seen
        log.error("live set not taken up; %s: %s", _serving_live(state), exc)
    except Exception:  # noqa: BLE001 - a bug, not a bad file: logged in full, once per file version
        state.live_failed = seen
        log.exception("live set not taken up; %s", _serving_live(state))
    finally:
        state.live_building = False


def _serving_live(state) -> str:
    live = state.served.live if state.served is not None else None
    return "serving no live set" if live is None else f"still serving the set published at {live.since.isoformat()}"


CATEGORY_HELP = "only streamers in one of these categories, comma-separated, any case (see STREAMERS_PATH, PUT /live)"
LANGUAGE_HELP = "only streamers in one of these languages, comma-separated, any case (e.g. a new viewer's locale)"


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


def _live_status(live: LiveSet) -> LiveStatus:
    return LiveStatus(
        live=len(live),
        unknown=live.unknown,
        since=live.since.isoformat(timespec="seconds"),
        categories=live.counts("category"),
        languages=live.counts("language"),
    )


def create_app(settings: Settings | None = None, recommender: Recommender | None = None) -> FastAPI:
    """The app; `recommender` skips loading from `settings.model_path` (already loaded). Raises
    SettingsError for settings the service cannot start with (check_service)."""
    settings = settings or get_settings()
    check_service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        version, failed = file_version(settings.model_path), None
        if recommender is not None:
            model = recommender
        else:
            model, failed = load_at_start(settings.model_path)
        # Requests do small matrix-vector products; BLAS threads would only add wake-ups.
        blas = threadpool_limits(1, "blas")
        try:
            catalog = load_catalog(settings, model)
        except CatalogError as exc:  # serve without categories and languages rather than not at all
            log.error("streamer catalog not loaded: %s", exc)
            catalog = None
        app.state.served = ServedModel(
            model, codes=catalog_codes(catalog, model.streamers), filter_budget=settings.filter_cache_mb << 20
        )
        app.state.settings = settings
        app.state.metrics = metrics
        metrics.model(model)
        app.state.reload_lock = threading.Lock()
        app.state.live_version, app.state.live_failed, app.state.live_building = None, None, False
        app.state.model_version, app.state.model_failed = (None, failed) if failed else (version, None)
        app.state.model_loading = False
        sync_live(app, force=True)
        watcher = asyncio.create_task(watch_files(app))
        log.info(
            "model loaded: %d users, %d streamers, created %s",
            model.n_users,
            model.n_streamers,
            model.metadata.get("created_at"),
        )
        yield
        watcher.cancel()
        app.state.served = None
        metrics.flush()
        metrics.worker_exit()
        blas.restore_original_limits()

    app = FastAPI(
        title="Streamer recommendations",
        description="Personalized 'who to watch' lists for a live-streaming platform.",
        version="1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    if settings.docs:
        add_docs(app)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer, but ASCII-escaped: a body may carry text that is not UTF-8 (a
        # lone surrogate escaped in JSON), which its handler cannot encode (a 500).
        body = json.dumps({"detail": jsonable_encoder(exc.errors())})
        return Response(body, status_code=422, media_type="application/json")

    # Admin token and body size, before FastAPI reads a body (it parses one before dependencies).
    admin = {("PUT", "/live"), ("POST", "/admin/reload")}
    app.add_middleware(Guard, admin=admin, token=lambda: settings.admin_token, limit=lambda: settings.max_body_bytes)
    # Outermost, so that what Guard refuses is counted too.
    metrics = Metrics(settings.metrics)
    app.add_middleware(RequestMetrics, metrics=metrics, known=frozenset(path for _, path in admin))
    no_live = {409: {"model": ErrorDetail, "description": "live_only before any PUT /live"}}

    @app.get("/recomendations/user/{user_id:path}", response_model=RecommendationResponse, responses=no_live)
    @app.get(
        "/recommendations/user/{user_id:path}",
        response_model=RecommendationResponse,
        responses=no_live,
        include_in_schema=False,
    )
    async def recommendations(
        request: Request,
        user_id: Annotated[str, Path(min_length=1, description="the viewer's uid as in the sessions file")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many streamers")] = 10,
        exclude_watched: Annotated[bool, Query(description="only streamers the viewer never watched")] = False,
        live_only: Annotated[bool, Query(description="only streamers live now (see PUT /live)")] = False,
        recent: Annotated[
            str | None,
            Query(description="for a viewer the model does not know: streamers watched recently, comma-separated"),
        ] = None,
        category: Annotated[str | None, Query(description=CATEGORY_HELP)] = None,
        language: Annotated[str | None, Query(description=LANGUAGE_HELP)] = None,
    ) -> Response:
        """Streamers for one viewer, best first. Unknown viewers are ranked from `recent` when it
        names streamers the model knows, else get the popular list."""
        # Precomputed lists or a few thousand dot products: microseconds, so this runs on the
        # event loop. The state is read from app.state directly: a FastAPI dependency here cost
        # 10% of the throughput.
        names = [n.strip() for n in recent.split(",")[:MAX_RECENT] if n.strip()] if recent else None
        categories = filter_values("category", category, settings) if category else None
        languages = filter_values("language", language, settings) if language else None
        try:
            source, body = request.app.state.served.answer(
                user_id, k, exclude_watched, live_only, names, categories, languages
            )
        except NoLiveSet:
            raise HTTPException(409, "live_only=true needs a live set: none has been published (PUT /live)") from None
        request.scope["source"] = source  # for RequestMetrics
        return Response(body, media_type="application/json")

    @app.get(
        "/streamers/{streamer_name:path}/similar",
        response_model=SimilarResponse,
        responses={404: {"model": ErrorDetail, "description": "a streamer the model does not know"}, **no_live},
    )
    async def similar(
        request: Request,
        streamer_name: Annotated[str, Path(min_length=1)],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many streamers")] = 10,
        live_only: Annotated[bool, Query(description="only streamers live now")] = False,
        category: Annotated[str | None, Query(description=CATEGORY_HELP)] = None,
        language: Annotated[str | None, Query(description=LANGUAGE_HELP)] = None,
    ) -> Response:
        """Streamers whose audiences overlap with this one's (ALS factor cosine), never itself."""
        categories, languages = (
            filter_values("category", category, settings),
            filter_values("language", language, settings),
        )
        served: ServedModel = request.app.state.served
        row = served.model.streamers.get(streamer_name)
        if row is None:
            raise HTTPException(404, f"unknown streamer {streamer_name!r}: the model has never seen it")
        if live_only and served.live is None:
            raise HTTPException(409, "live_only=true needs a live set: none has been published (PUT /live)")
        candidates = served.live.rows if live_only else None
        if categories or languages:
            candidates = served.filtered(categories, languages, live_only).candidates.rows
        rows, scores = served.model.similar(row, k, candidates)
        body = f'{{"streamer_name":{json.dumps(streamer_name)},"similar":[{served.items_json(rows, scores)}]}}'
        return Response(body.encode(), media_type="application/json")

    @app.get("/live", response_model=LiveStatus)
    async def live_status(request: Request) -> LiveStatus:
        """How many streamers are live now, and since when."""
        live: LiveSet | None = request.app.state.served.live
        if live is None:
            return LiveStatus(live=0, unknown=0, since=None)
        return _live_status(live)

    @app.put(
        "/live",
        response_model=LiveStatus,
        dependencies=[Depends(require_admin)],
        responses={**ADMIN_RESPONSES, 503: {"model": ErrorDetail, "description": "LIVE_PATH is not writable"}},
    )
    def publish_live(request: Request, update: LiveUpdate) -> LiveStatus:
        """Publish the set of streamers live now, as names or with what is known of each stream
        now (category, language, viewers); names the model does not know are counted and left
        out."""
        streams = [LiveStream.of(s) for s in update.streamers]
        state = request.app.state
        with state.reload_lock:  # against a concurrent reload swapping the model underneath
            served = state.served.with_live(streams)
            live = served.live
            # Shared with the other workers through the file; this one swaps at once.
            path = live_file(settings)
            try:
                state.live_version = write_live(path, list(live.streams), live.since)
            except OSError as exc:
                raise HTTPException(
                    503, f"cannot write the live set to {path} ({exc.strerror or exc}); nothing was published"
                ) from None
            state.served = served
        state.metrics.live(live)
        log.info("live set: %d streamers (%d unknown names)", len(live), live.unknown)
        return _live_status(live)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={404: {"model": ErrorDetail, "description": "metrics are off (METRICS=false)"}},
    )
    async def prometheus_metrics() -> PlainTextResponse:
        """Counts and timings of every worker in the Prometheus text format (see monitoring.py);
        another worker's requests of the last second may not be in them yet."""
        if not metrics.enabled:
            raise HTTPException(404, "metrics are off: set METRICS=true to enable them")
        metrics.flush()  # on the event loop, where the tallies are kept
        return PlainTextResponse(exposition(), media_type=CONTENT_TYPE)

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        served: ServedModel | None = getattr(request.app.state, "served", None)
        model = served.model if served else None
        return Health(
            status="ok",
            worker_pid=os.getpid(),
            model_loaded=model is not None,
            created_at=model.metadata.get("created_at") if model else None,
            users=model.n_users if model else 0,
            streamers=model.n_streamers if model else 0,
        )

    @app.post(
        "/admin/reload",
        response_model=Reloaded,
        dependencies=[Depends(require_admin)],
        responses={**ADMIN_RESPONSES, 409: {"model": ErrorDetail, "description": "the file did not load"}},
    )
    def reload_model(request: Request) -> Reloaded:
        """Load the model file again and swap it in, here and then in every other worker; on
        failure the old model keeps serving."""
        state = request.app.state
        with state.reload_lock:  # one reload at a time; requests are never blocked by it
            try:
                old, new = reload_served(request.app)
            except (ModelError, CatalogError) as exc:
                created = state.served.model.metadata.get("created_at")
                why = f"reload failed; still serving the model created at {created}"
                log.error("%s: %s", why, exc)
                raise HTTPException(409, f"{why}: {exc}") from None
            # The other workers take up a file whose modification time changed: touch it.
            try:
                os.utime(settings.model_path)
            except OSError as exc:
                log.warning("reloaded this worker only: cannot touch %s (%s)", settings.model_path, exc)
            state.model_version, state.model_failed = file_version(settings.model_path), None
        return Reloaded(
            status="reloaded",
            created_at=new.metadata.get("created_at"),
            previous_created_at=old.metadata.get("created_at"),
            users=new.n_users,
            streamers=new.n_streamers,
        )

    return app


DOCS_ASSETS = "/docs-assets"


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts served from here (pinned in the
    fastapi-offline package), not from a CDN: the pages work offline, and no third-party script
    runs where an admin types the token. Neither page names another host."""
    import fastapi_offline

    assets = os.path.join(os.path.dirname(fastapi_offline.__file__), "static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def _app_from_environment() -> FastAPI:
    """`uvicorn service:app`: settings from the environment; a bad one is one line and exit 2."""
    try:
        return create_app()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = _app_from_environment()

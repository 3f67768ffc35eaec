"""The HTTP routes, as a table of short handlers on one module-level router. Each reads the worker's
`Serving` (serve/serving.py) from `request.app.state.serving` and only parses and encodes: the
ranking is the serving state's. The hot routes read app.state directly: a FastAPI dependency there
cost 10% of the throughput.

`/recomendations/user/{user_id}` is the published contract (its spelling stays);
`/recommendations/user/{user_id}` answers the same.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from streamrec.events.batch import BatchInvalid
from streamrec.model.scoring import similar as similar_streamers
from streamrec.serve.guards import admin_refusal, refusal_headers
from streamrec.serve.live import LiveSet, LiveStream, LiveUpdate
from streamrec.serve.monitoring import CONTENT_TYPE, exposition
from streamrec.serve.schemas import (
    ErrorDetail,
    EventsAccepted,
    EventsDeleted,
    Fleet,
    Health,
    LiveStatus,
    Ready,
    RecommendationResponse,
    Reloaded,
    SimilarResponse,
    Worker,
)
from streamrec.serve.serving import (
    EventsRefused,
    NoLiveSet,
    PublishFailed,
    ReloadFailed,
    ServedModel,
    Serving,
    StoreDown,
)
from streamrec.serve.store import StoreUnavailable, parse_version
from streamrec.settings import Settings

MAX_K = 100
MAX_RECENT = 500  # recent streamer names used per request; more are ignored
ADMIN_PATHS = {("PUT", "/live"), ("POST", "/admin/reload"), ("GET", "/admin/fleet"), ("DELETE", "/admin/events")}
INGEST_PATHS = {("POST", "/events")}  # the ingest token, checked by Guard first as the admin one is
CATEGORY_HELP = "only streamers in one of these categories, comma-separated, any case (see STREAMERS_PATH, PUT /live)"
LANGUAGE_HELP = "only streamers in one of these languages, comma-separated, any case (e.g. a new viewer's locale)"
NO_LIVE_SET = "live_only=true needs a live set: none has been published (PUT /live)"


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
                    "input": (text or "")[:100],
                }
            ]
        )
    return values


_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN from the settings")


def require_admin(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The admin token, checked again here (Guard checks it before any body is read); the
    HTTPBearer dependency only documents the scheme in the OpenAPI schema."""
    refusal = admin_refusal(request.app.state.serving.settings.admin_token, request.headers.get("authorization"))
    if refusal is not None:
        raise HTTPException(refusal[0], refusal[1], headers=refusal_headers(refusal[0]) or None)


ADMIN_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorDetail, "description": "no bearer token"},
    403: {"model": ErrorDetail, "description": "wrong token"},
    404: {"model": ErrorDetail, "description": "admin endpoints are off (no ADMIN_TOKEN set)"},
}
NO_LIVE: dict[int | str, dict] = {409: {"model": ErrorDetail, "description": "live_only before any PUT /live"}}
STORE_DOWN = {"model": ErrorDetail, "description": "the store (REDIS_URL) is unreachable; nothing was changed"}


def live_status(live: LiveSet) -> LiveStatus:
    return LiveStatus(
        version=live.version,
        live=len(live),
        unknown=live.unknown,
        since=live.since.isoformat(timespec="seconds"),
        categories=live.counts("category"),
        languages=live.counts("language"),
    )


def answer(
    serving: Serving,
    user_id: str,
    k: int,
    exclude_watched: bool,
    live_only: bool,
    recent: str | None,
    category: str | None,
    language: str | None,
) -> tuple[bytes, str]:
    """(JSON body, source) of the recommendations route for validated parameters. Raises
    HTTPException (409: live_only without a live set) and RequestValidationError (filters)."""
    # Precomputed lists or a few thousand dot products: microseconds, so this runs on the event loop.
    names = [n.strip() for n in recent.split(",")[:MAX_RECENT] if n.strip()] if recent else None
    categories = filter_values("category", category, serving.settings) if category else None
    languages = filter_values("language", language, serving.settings) if language else None
    held = serving.held_sessions(user_id)
    try:
        served = serving.served
        source, rows, scores = served.recommend(
            user_id, k, exclude_watched, live_only, names, categories, languages, held, serving.held.newest_time or 0
        )
    except NoLiveSet:
        raise HTTPException(409, NO_LIVE_SET) from None
    return served.response(user_id, source, rows, scores), source


K_VALUES = {str(k): k for k in range(1, MAX_K + 1)}  # k as digits alone, in range
BOOLS = {"true": True, "false": False, "1": True, "0": False}  # as pydantic reads them; others: the long way
TEXT = frozenset({"recent", "category", "language"})


def plain_recommendations(scope) -> tuple[bytes, str] | None:
    """The recommendations route's answer without FastAPI's per-request parameter machinery (half
    of a request's cost), for the requests whose parameters are plainly valid: k as 1-100 in digits,
    booleans as true/false/1/0, text as text, the same query parsing as Starlette's (last value
    wins) and the same answer. None for anything else, and for anything that would not be a 200:
    the route then runs as FastAPI runs it, with its validation and its errors."""
    user_id = scope["path_params"].get("user_id")
    if not user_id:
        return None
    k, flags, text = 10, {"exclude_watched": False, "live_only": False}, dict.fromkeys(TEXT)
    raw = scope["query_string"]
    if raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if name == "k":
                if value not in K_VALUES:
                    return None
                k = K_VALUES[value]
            elif name in flags:
                if value not in BOOLS:
                    return None
                flags[name] = BOOLS[value]
            elif name in TEXT:
                text[name] = value
    try:
        return answer(
            scope["app"].state.serving,
            user_id,
            k,
            flags["exclude_watched"],
            flags["live_only"],
            text["recent"],
            text["category"],
            text["language"],
        )
    except (HTTPException, RequestValidationError):
        return None


def plain(shortcut: Callable[[dict], tuple[bytes, str] | None]):
    """Give an endpoint a shortcut for its plainly valid requests (see QuickRoute)."""

    def mark(endpoint):
        endpoint.shortcut = shortcut
        return endpoint

    return mark


class QuickRoute(APIRoute):
    """FastAPI's route, documented and validated as declared, with a shortcut for the requests
    that need none of its machinery: an endpoint marked with `plain(shortcut)` is answered by
    `shortcut(scope)` when that gives (body, source), and by FastAPI's own handler (the same
    validation, the same 422s) when it gives None."""

    def __init__(self, path: str, endpoint: Callable, **kwargs) -> None:
        super().__init__(path, endpoint, **kwargs)
        shortcut = getattr(endpoint, "shortcut", None)
        if shortcut is None:
            return
        self.full_app = full = self.app  # FastAPI's own, kept for the requests the shortcut declines

        async def app(scope, receive, send) -> None:
            answered = shortcut(scope)
            if answered is None:
                return await full(scope, receive, send)
            body, scope["source"] = answered  # the source: for RequestMetrics
            # As Starlette's Response(body, media_type="application/json") starts it.
            headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        self.app = app


router = APIRouter(route_class=QuickRoute)


@router.get("/recomendations/user/{user_id:path}", response_model=RecommendationResponse, responses=NO_LIVE)
@router.get(
    "/recommendations/user/{user_id:path}",
    response_model=RecommendationResponse,
    responses=NO_LIVE,
    summary="Recommendations (the same, spelled correctly)",
)
@plain(plain_recommendations)
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
    serving: Serving = request.app.state.serving
    body, request.scope["source"] = answer(
        serving, user_id, k, exclude_watched, live_only, recent, category, language
    )  # the source: for RequestMetrics
    return Response(body, media_type="application/json")


@router.get(
    "/streamers/{streamer_name:path}/similar",
    response_model=SimilarResponse,
    responses={404: {"model": ErrorDetail, "description": "a streamer the model does not know"}, **NO_LIVE},
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
    serving: Serving = request.app.state.serving
    categories = filter_values("category", category, serving.settings)
    languages = filter_values("language", language, serving.settings)
    served: ServedModel = serving.served
    row = served.model.streamers.get(streamer_name)
    if row is None:
        raise HTTPException(404, f"unknown streamer {streamer_name!r}: the model has never seen it")
    live = served.live if live_only else None
    if live_only and live is None:
        raise HTTPException(409, NO_LIVE_SET)
    candidates = live.rows if live is not None else None
    if categories or languages:
        candidates = served.filtered(categories, languages, live_only).candidates.rows
    rows, scores = similar_streamers(served.model, row, k, candidates)
    body = f'{{"streamer_name":{json.dumps(streamer_name)},"similar":[{served.items_json(rows, scores)}]}}'
    return Response(body.encode(), media_type="application/json")


@router.get("/live", response_model=LiveStatus)
async def get_live(request: Request) -> LiveStatus:
    """How many streamers are live now, and since when."""
    live: LiveSet | None = request.app.state.serving.served.live
    if live is None:
        return LiveStatus(version=None, live=0, unknown=0, since=None, categories={}, languages={})
    return live_status(live)


@router.put(
    "/live",
    response_model=LiveStatus,
    dependencies=[Depends(require_admin)],
    responses={
        **ADMIN_RESPONSES,
        503: {"model": ErrorDetail, "description": "LIVE_PATH not writable, or the store (REDIS_URL) unreachable"},
    },
)
async def publish_live(request: Request, update: LiveUpdate) -> LiveStatus:
    """Publish the set of streamers live now, as names or with what is known of each stream
    now (category, language, viewers); names the model does not know are counted and left
    out. Every worker (with REDIS_URL, of every host) serves it within a second of the answer."""
    try:
        live = await request.app.state.serving.publish([LiveStream.of(s) for s in update.streamers])
    except (PublishFailed, StoreDown) as exc:
        raise HTTPException(503, str(exc)) from None
    return live_status(live)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={404: {"model": ErrorDetail, "description": "metrics are off (METRICS=false)"}},
)
async def prometheus_metrics(request: Request) -> PlainTextResponse:
    """Counts and timings of every worker in the Prometheus text format (see serve/monitoring.py);
    another worker's requests of the last second may not be in them yet."""
    metrics = request.app.state.serving.metrics
    if not metrics.enabled:
        raise HTTPException(404, "metrics are off: set METRICS=true to enable them")
    metrics.flush()  # on the event loop, where the tallies are kept
    return PlainTextResponse(exposition(), media_type=CONTENT_TYPE)


@router.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """This worker: alive, and which model and live set it serves."""
    serving: Serving = request.app.state.serving
    model, state = serving.served.model, serving.state()
    return Health(
        status="ok",
        worker_pid=os.getpid(),
        model_loaded=True,
        created_at=model.metadata.get("created_at"),
        users=model.n_users,
        streamers=model.n_streamers,
        ready=serving.ready,
        model_checksum=state["model_checksum"],
        fleet_model_checksum=state["fleet_model_checksum"],
        live_version=state["live_version"],
        live_lists_ready=state["live_lists_ready"],
        store="none" if serving.store is None else ("down" if serving.store_up is False else "up"),
    )


@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": ErrorDetail, "description": "the model's pages are still being read in"}},
)
async def ready(request: Request) -> Response:
    """For a load balancer: 200 once this worker's model is in memory (at most WARM_SECONDS after
    it started), 503 before: send it traffic only then."""
    if not request.app.state.serving.ready:
        return Response(
            '{"detail":"not ready: reading the model into memory (WARM_SECONDS at most)"}',
            status_code=503,
            media_type="application/json",
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    return Response('{"status":"ready"}', media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post(
    "/admin/reload",
    response_model=Reloaded,
    dependencies=[Depends(require_admin)],
    responses={
        **ADMIN_RESPONSES,
        409: {"model": ErrorDetail, "description": "the file did not load"},
        503: STORE_DOWN,
    },
)
async def reload_model(request: Request) -> Reloaded:
    """Load the model file again and swap it in, here and then in every other worker (with
    REDIS_URL, of every host: each loads its own copy and serves it if it is this model, by
    checksum); on failure the old model keeps serving."""
    try:
        old, new, reached = await request.app.state.serving.reload_everywhere()
    except ReloadFailed as exc:
        raise HTTPException(409, str(exc)) from None
    except StoreDown as exc:
        raise HTTPException(503, str(exc)) from None
    return Reloaded(
        status="reloaded",
        created_at=new.metadata.get("created_at"),
        previous_created_at=old.metadata.get("created_at"),
        users=new.n_users,
        streamers=new.n_streamers,
        checksum=new.checksum or None,
        workers_notified=reached,
    )


@router.get(
    "/admin/fleet",
    response_model=Fleet,
    dependencies=[Depends(require_admin)],
    responses={
        **ADMIN_RESPONSES,
        409: {"model": ErrorDetail, "description": "no store (REDIS_URL): there is no fleet to list"},
        503: STORE_DOWN,
    },
)
async def fleet(request: Request) -> Fleet:
    """Every worker of every host heard from in the last minute, with the model and live set it
    serves; `lagging` names those not on the fleet's model or the newest live set."""
    serving: Serving = request.app.state.serving
    if serving.store is None:
        raise HTTPException(409, "GET /admin/fleet needs the shared store: set REDIS_URL on every host")
    try:
        entries = await serving.store.fleet()
    except StoreUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    workers = []
    for entry in entries:
        with contextlib.suppress(ValidationError):  # another writer's field: not one of ours
            workers.append(Worker.model_validate(entry))
    newest = max((v for w in workers if (v := parse_version(w.live_version)) is not None), default=None)
    expected = serving.fleet_checksum
    lagging = [
        f"{w.instance}/{w.pid}"
        for w in workers
        if (expected and w.model_checksum != expected)
        or (newest is not None and parse_version(w.live_version) != newest)
    ]
    return Fleet(workers=workers, lagging=lagging)


SESSION_ITEM = {
    "type": "object",
    "required": ["uid", "session_id", "streamer_name", "time_start", "time_end"],
    "properties": {
        "uid": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "session_id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "streamer_name": {"type": "string"},
        "time_start": {"anyOf": [{"type": "integer"}, {"type": "string"}], "description": "the model's format"},
        "time_end": {"anyOf": [{"type": "integer"}, {"type": "string"}], "description": "the model's format"},
    },
}
EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["sessions"],
                    "properties": {"sessions": {"type": "array", "items": SESSION_ITEM}},
                }
            }
        },
    }
}
_ingest_bearer = HTTPBearer(auto_error=False, description="INGEST_TOKEN from the settings")


def require_ingest(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_ingest_bearer)]
) -> None:
    """The ingest token, checked again here (Guard checks it before any body is read)."""
    refusal = admin_refusal(
        request.app.state.serving.settings.ingest_token, request.headers.get("authorization"), "ingest"
    )
    if refusal is not None:
        raise HTTPException(refusal[0], refusal[1], headers=refusal_headers(refusal[0]) or None)


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    dependencies=[Depends(require_ingest)],
    openapi_extra=EVENTS_BODY,
    responses={
        401: {"model": ErrorDetail, "description": "no bearer token"},
        403: {"model": ErrorDetail, "description": "wrong token"},
        404: {"model": ErrorDetail, "description": "ingest is off (no INGEST_TOKEN set)"},
        413: {"model": ErrorDetail, "description": "body over MAX_BODY_BYTES"},
        503: {"model": ErrorDetail, "description": "the event log is full or cannot be written: nothing was kept"},
    },
)
async def events(request: Request) -> Response:
    """Viewing sessions as they happen, the sessions CSV's columns. Written to the event log
    (synced to disk) before the 202; within a second every worker ranks the viewer with them, and
    `als_fit.py --update --events` takes them into the model. A malformed item makes the batch a
    422 naming the item and field (nothing is kept); items the CSV reader would drop are counted."""
    serving: Serving = request.app.state.serving
    body = await request.body()
    try:
        batch, position = await serving.ingest(body)
    except BatchInvalid as exc:
        serving.metrics.events(None, "invalid")
        detail = exc.errors + (
            [{"type": "more", "loc": ["body"], "msg": f"{exc.more} more errors", "input": None}] if exc.more else []
        )
        return Response(json.dumps({"detail": detail}), status_code=422, media_type="application/json")
    except EventsRefused as exc:
        raise HTTPException(503, str(exc)) from None
    answer = EventsAccepted(
        received=batch.received,
        accepted=len(batch),
        dropped=batch.dropped,
        position=None if position is None else str(position),
    )
    return Response(answer.model_dump_json(), status_code=202, media_type="application/json")


@router.delete(
    "/admin/events",
    response_model=EventsDeleted,
    dependencies=[Depends(require_admin)],
    responses={
        **ADMIN_RESPONSES,
        409: {"model": ErrorDetail, "description": "ingest is off: there is no event log"},
        503: {"model": ErrorDetail, "description": "the event log or the store cannot be written"},
    },
)
async def delete_events(
    request: Request,
    user_id: Annotated[str, Query(min_length=1, max_length=1024, description="the viewer whose events to delete")],
) -> EventsDeleted:
    """Delete one viewer's sessions from the event log and from what every worker holds (viewing
    histories are personal data): the next update never sees them."""
    serving: Serving = request.app.state.serving
    if not serving.events_on:
        raise HTTPException(409, "there is no event log: POST /events is off (set INGEST_TOKEN)")
    try:
        deleted = await serving.forget_viewer(user_id)
    except (EventsRefused, StoreDown) as exc:
        raise HTTPException(503, str(exc)) from None
    return EventsDeleted(user_id=user_id, deleted=deleted)

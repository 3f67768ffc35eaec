"""The HTTP service: the FastAPI app around one worker's serving state.

    streamrec-serve                                  # the usual way (checks the model first)
    uvicorn streamrec.serve.app:app --workers 4      # also works: MODEL_PATH from the environment or .env

The lifespan handler loads the model into a `Serving` (serve/serving.py: the snapshot a request
reads, reload, publish, watch) kept on `app.state.serving`; tests hand a model to `create_app`
instead of a path. The routes are a table in serve/routes.py. Admin endpoints need
`Authorization: Bearer <ADMIN_TOKEN>` (checked before a body is read: serve/guards.py) and are off
(404) when no token is set. `GET /metrics`: serve/monitoring.py. Importing this module reads no
settings: `app` is built on first use.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from streamrec import __version__
from streamrec.model.recommender import Recommender
from streamrec.serve.guards import Guard
from streamrec.serve.monitoring import Metrics, RequestMetrics
from streamrec.serve.routes import ADMIN_PATHS, INGEST_PATHS, router
from streamrec.serve.serving import Serving
from streamrec.settings import Settings, SettingsError, check_service, get_settings


def create_app(
    settings: Settings | None = None, recommender: Recommender | None = None, *, freeze: bool = False
) -> FastAPI:
    """The app; `recommender` skips loading from `settings.model_path` (already loaded). `freeze`:
    the app is the process's (a worker of the service, not one of a test's many apps), and what
    is alive after startup is kept out of the collector's full passes. Raises SettingsError for
    settings the service cannot start with (check_service)."""
    settings = settings or get_settings()
    check_service(settings)
    metrics = Metrics(settings.metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Requests do small matrix-vector products; BLAS threads would only add wake-ups.
        blas = threadpool_limits(1, "blas")
        serving = app.state.serving = Serving.start(settings, metrics, recommender)
        await serving.open()
        if freeze:
            # What is alive now lives as long as the worker: kept out of the collector's full
            # passes, which would otherwise walk every module, class and function (110-170 ms here,
            # every request waiting) each time what the worker holds per viewer sets one off. A model
            # replaced later is still freed: it holds no reference cycles (tests/serve/test_app.py).
            gc.collect()
            gc.freeze()
        yield
        await serving.close()
        blas.restore_original_limits()

    app = FastAPI(
        title="Streamer recommendations",
        description="Personalized 'who to watch' lists for a live-streaming platform.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # The router's routes themselves, first: include_router would put them behind a second
        # router that every request is matched through (130 more calls, 5-8% of a request).
        routes=list(router.routes),
    )
    if settings.docs:
        add_docs(app)
    app.add_exception_handler(RequestValidationError, unprocessable)
    # Admin token and body size, before FastAPI reads a body (it parses one before dependencies).
    app.add_middleware(
        Guard,
        admin=ADMIN_PATHS,
        token=lambda: settings.admin_token,
        limit=lambda: settings.max_body_bytes,
        ingest=INGEST_PATHS,
        ingest_token=lambda: settings.ingest_token,
    )
    # Outermost, so that what Guard refuses is counted too.
    guarded = frozenset(path for _, path in ADMIN_PATHS | INGEST_PATHS)
    app.add_middleware(RequestMetrics, metrics=metrics, known=guarded)
    return app


async def unprocessable(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422, but ASCII-escaped: a body may carry text that is not UTF-8 (a lone
    surrogate escaped in JSON), which its handler cannot encode (a 500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())})
    return Response(body, status_code=422, media_type="application/json")


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
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def __getattr__(name: str) -> FastAPI:
    """`uvicorn streamrec.serve.app:app`: the app from the environment's settings, built on first
    use; a bad setting is one line and exit 2."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        app = create_app(freeze=True)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = app
    return app

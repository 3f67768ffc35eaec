"""The HTTP service: FastAPI app serving recommendations from one loaded model.

    python platform.py                 # the usual way (checks the model first)
    uvicorn service:app --workers 4    # also works: MODEL_PATH from the environment or .env

The model is loaded once, in the lifespan handler, and kept on `app.state.served` (tests hand a
model to `create_app` instead of a path). Every user's ranked lists are computed at training
time, so a request is a slice and a JSON string: it runs on the event loop.

`POST /admin/reload` swaps in a freshly loaded model with one reference assignment: a request
holds the model it started with until it finishes, so none fails during a swap, and a file that
fails to load leaves the old model serving. Admin endpoints need `Authorization: Bearer
<ADMIN_TOKEN>` and are off (404) when no token is set. With several workers each holds its own
model and a reload reaches the one worker that answers it: restart the workers instead
(`kill -HUP` on the uvicorn parent process restarts them one by one).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from recommender import PERSONAL, POPULAR, ModelError, Recommender, load_model
from settings import Settings, get_settings

log = logging.getLogger("service")

MAX_K = 100


class Recommendation(BaseModel):
    streamer_name: str
    score: float = Field(description="higher is better; comparable within one response only")


class RecommendationResponse(BaseModel):
    user_id: str
    source: Literal["personal", "popular"] = Field(
        description="personal: ranked for this viewer; popular: the viewer is unknown to the model"
    )
    recommendations: list[Recommendation]


class Health(BaseModel):
    status: Literal["ok"]
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


class ServedModel:
    """The loaded model and what makes an answer cheap: every streamer name already JSON-encoded,
    so a response is a few string joins around a slice of the precomputed lists."""

    def __init__(self, model: Recommender):
        self.model = model
        self.names_json = [json.dumps(name) for name in model.streamers.ids.tolist()]

    def answer(self, user_id: str, k: int, exclude_watched: bool) -> bytes:
        """The JSON body of RecommendationResponse."""
        row = self.model.users.get(user_id)
        if row is None:
            source, (rows, scores) = POPULAR, self.model.recommend_popular(k)
        else:
            source, (rows, scores) = PERSONAL, self.model.recommend(row, k, exclude_watched)
        names = self.names_json
        items = ",".join(
            f'{{"streamer_name":{names[i]},"score":{s!r}}}' for i, s in zip(rows.tolist(), scores.tolist(), strict=True)
        )
        return f'{{"user_id":{json.dumps(user_id)},"source":"{source}","recommendations":[{items}]}}'.encode()


_bearer = HTTPBearer(auto_error=False, description="ADMIN_TOKEN from the settings")


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token: str = request.app.state.settings.admin_token
    if not token:
        raise HTTPException(404, "admin endpoints are off: set ADMIN_TOKEN to enable them")
    if credentials is None:
        raise HTTPException(
            401, "expected 'Authorization: Bearer <admin token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(403, "wrong admin token")


ADMIN_RESPONSES = {
    401: {"model": ErrorDetail, "description": "no bearer token"},
    403: {"model": ErrorDetail, "description": "wrong token"},
    404: {"model": ErrorDetail, "description": "admin endpoints are off (no ADMIN_TOKEN set)"},
}


def create_app(settings: Settings | None = None, recommender: Recommender | None = None) -> FastAPI:
    """The app; `recommender` skips loading from `settings.model_path` (already loaded)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = recommender if recommender is not None else load_model(settings.model_path)
        app.state.served = ServedModel(model)
        app.state.settings = settings
        app.state.reload_lock = threading.Lock()
        log.info(
            "model loaded: %d users, %d streamers, created %s",
            model.n_users,
            model.n_streamers,
            model.metadata.get("created_at"),
        )
        yield
        app.state.served = None

    app = FastAPI(
        title="Streamer recommendations",
        description="Personalized 'who to watch' lists for a live-streaming platform.",
        version="1.0",
        lifespan=lifespan,
    )

    @app.get("/recomendations/user/{user_id:path}", response_model=RecommendationResponse)
    @app.get("/recommendations/user/{user_id:path}", response_model=RecommendationResponse, include_in_schema=False)
    async def recommendations(
        request: Request,
        user_id: Annotated[str, Path(min_length=1, description="the viewer's uid as in the sessions file")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many streamers")] = 10,
        exclude_watched: Annotated[bool, Query(description="only streamers the viewer never watched")] = False,
    ) -> Response:
        """Streamers for one viewer, best first. Unknown viewers get the popular list."""
        # A lookup in precomputed lists: microseconds, so it runs on the event loop. The model is
        # read from app.state directly: a FastAPI dependency here cost 10% of the throughput.
        body = request.app.state.served.answer(user_id, k, exclude_watched)
        return Response(body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        served: ServedModel | None = getattr(request.app.state, "served", None)
        model = served.model if served else None
        return Health(
            status="ok",
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
        """Load the model file again and swap it in; on failure the old model keeps serving."""
        state = request.app.state
        with state.reload_lock:  # one reload at a time; requests are never blocked by it
            old: Recommender = state.served.model
            try:
                new = load_model(settings.model_path)
                served = ServedModel(new)
            except ModelError as exc:
                log.error(
                    "reload failed; still serving the model created at %s: %s", old.metadata.get("created_at"), exc
                )
                raise HTTPException(
                    409, f"reload failed; still serving the model created at {old.metadata.get('created_at')}: {exc}"
                ) from None
            state.served = served  # one assignment: a request sees the old model or the new
        log.info("reloaded %s: %d users, %d streamers", settings.model_path, new.n_users, new.n_streamers)
        return Reloaded(
            status="reloaded",
            created_at=new.metadata.get("created_at"),
            previous_created_at=old.metadata.get("created_at"),
            users=new.n_users,
            streamers=new.n_streamers,
        )

    return app


app = create_app()

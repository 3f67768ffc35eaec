"""The HTTP service: FastAPI app serving recommendations from one loaded model.

    python platform.py                 # the usual way (checks the model first)
    uvicorn service:app --workers 4    # also works: MODEL_PATH from the environment or .env

The model is loaded once, in the lifespan handler, and kept on `app.state.model`; endpoints reach
it through `get_model`, which tests may override. Ranking is a few small numpy operations per
request, so the endpoints are plain `def` and run in the threadpool.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from recommender import Recommender, load_model
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


def get_model(request: Request) -> Recommender:
    return request.app.state.model


Model = Annotated[Recommender, Depends(get_model)]


def create_app(settings: Settings | None = None, recommender: Recommender | None = None) -> FastAPI:
    """The app; `recommender` skips loading from `settings.model_path` (already loaded)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model = recommender if recommender is not None else load_model(settings.model_path)
        app.state.model = model
        log.info(
            "model loaded: %d users, %d streamers, created %s",
            model.n_users,
            model.n_streamers,
            model.metadata.get("created_at"),
        )
        yield
        app.state.model = None

    app = FastAPI(
        title="Streamer recommendations",
        description="Personalized 'who to watch' lists for a live-streaming platform.",
        version="1.0",
        lifespan=lifespan,
    )

    @app.get("/recomendations/user/{user_id:path}", response_model=RecommendationResponse)
    @app.get("/recommendations/user/{user_id:path}", response_model=RecommendationResponse, include_in_schema=False)
    def recommendations(
        model: Model,
        user_id: Annotated[str, Path(description="the viewer's uid as in the sessions file")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many streamers")] = 10,
        exclude_watched: Annotated[bool, Query(description="only streamers the viewer never watched")] = False,
    ) -> RecommendationResponse:
        """Streamers for one viewer, best first. Unknown viewers get the popular list."""
        source, items = model.recommend_for(user_id, k, exclude_watched)
        return RecommendationResponse(
            user_id=user_id,
            source=source,
            recommendations=[Recommendation(streamer_name=name, score=score) for name, score in items],
        )

    @app.get("/health", response_model=Health)
    def health(request: Request) -> Health:
        model: Recommender | None = getattr(request.app.state, "model", None)
        return Health(
            status="ok",
            model_loaded=model is not None,
            created_at=model.metadata.get("created_at") if model else None,
            users=model.n_users if model else 0,
            streamers=model.n_streamers if model else 0,
        )

    return app


app = create_app()

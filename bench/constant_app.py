"""The serving baseline: what FastAPI and uvicorn answer with no work behind the answer.

    python -m uvicorn bench.constant_app:app --port 8001

Same route and response shape as the service, a constant ten-item list.
"""

from fastapi import FastAPI

app = FastAPI()
ITEMS = [{"streamer_name": f"streamer{i}", "score": 1.0 - i / 10} for i in range(10)]


@app.get("/recomendations/user/{user_id:path}")
async def constant(user_id: str) -> dict:
    return {"user_id": user_id, "source": "popular", "recommendations": ITEMS}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}

"""The FastAPI app with its real lifespan, inside TestClient."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from streamrec.model.model_file import load_model
from streamrec.serve.app import create_app
from streamrec.settings import Settings
from tests.helpers import GROUP_A
from tests.server.helpers import metric_value as value


@pytest.fixture(scope="module")
def client(block_model_path):
    app = create_app(Settings(model_path=block_model_path, _env_file=None))
    with TestClient(app) as c:  # runs the lifespan: the model is loaded from the file
        yield c


def test_known_user_gets_personal(client):
    r = client.get("/recomendations/user/1", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "1" and body["source"] == "personal"
    assert len(body["recommendations"]) == 3
    assert all(set(item) == {"streamer_name", "score"} for item in body["recommendations"])


def test_numeric_uid_is_found_as_string(client):
    # uid 45 was an integer in the CSV; in the URL it is the string "45"
    assert client.get("/recomendations/user/45").json()["source"] == "personal"


def test_unknown_user_gets_popular_never_404(client):
    r = client.get("/recomendations/user/somebody-new", params={"k": 5})
    assert r.status_code == 200
    assert r.json()["source"] == "popular"
    assert len(r.json()["recommendations"]) == 5


def test_default_k_is_10_and_lists_are_distinct(client):
    items = client.get("/recomendations/user/2").json()["recommendations"]
    names = [i["streamer_name"] for i in items]
    assert len(names) == 10 == len(set(names))
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)


def test_k_larger_than_catalog_returns_whole_catalog(client):
    assert len(client.get("/recomendations/user/2?k=100").json()["recommendations"]) == 12


@pytest.mark.parametrize("k", ["0", "101", "-3", "ten", "1.5"])
def test_k_out_of_bounds_is_422_that_says_so(client, k):
    r = client.get("/recomendations/user/1", params={"k": k})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "k"]


def test_exclude_watched_drops_history(client):
    all_items = client.get("/recomendations/user/1?k=3").json()["recommendations"]
    new_items = client.get("/recomendations/user/1?k=3&exclude_watched=true").json()["recommendations"]
    watched = {i["streamer_name"] for i in all_items}  # user 1 watched exactly these three
    new = {i["streamer_name"] for i in new_items}
    assert not watched & new
    assert new <= set(GROUP_A)


def test_double_m_alias_answers_the_same(client):
    a = client.get("/recomendations/user/7?k=4").json()
    b = client.get("/recommendations/user/7?k=4").json()
    assert a == b


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["users"] == 60 and body["streamers"] == 12
    assert body["created_at"]


def test_docs_and_schema(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/recomendations/user/{user_id}" in paths


def test_missing_model_stops_startup(tmp_path):
    from streamrec.model.model_file import ModelError

    app = create_app(Settings(model_path=tmp_path / "none.pkl", _env_file=None))
    with pytest.raises(ModelError, match="no model file at"):
        with TestClient(app):
            pass


ROUTE = "/recomendations/user/{user_id:path}"


def test_metrics_in_one_process_and_switched_off(block_model_path):
    app = create_app(Settings(model_path=block_model_path, _env_file=None))
    with TestClient(app) as c:
        before = value(c.get("/metrics").text, "streamrec_requests_total", route=ROUTE, status="200", source="recent")
        assert c.get("/recomendations/user/nobody", params={"recent": "alpha1"}).json()["source"] == "recent"
        after = value(c.get("/metrics").text, "streamrec_requests_total", route=ROUTE, status="200", source="recent")
        assert after == before + 1
    app = create_app(Settings(model_path=block_model_path, metrics=False, _env_file=None))
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 404
        assert c.get("/recomendations/user/1").status_code == 200


def test_ready_answers_503_until_the_model_is_in_memory_then_200(client):
    serving = client.app.state.serving
    deadline = time.monotonic() + 10
    while not serving.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/ready").json() == {"status": "ready"}
    serving.ready = False  # as while a start reads the model's pages in
    try:
        r = client.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "not ready" in r.json()["detail"]
        assert client.get("/health").json()["ready"] is False
    finally:
        serving.ready = True


def test_health_says_which_model_and_live_set_this_worker_serves(client, block_model_path):
    health = client.get("/health").json()
    assert health["model_checksum"] == load_model(block_model_path).checksum and len(health["model_checksum"]) == 16
    assert health["store"] == "none" and health["fleet_model_checksum"] is None
    put = client.put("/live", json={"streamers": ["alpha1"]})
    assert put.status_code == 404  # no admin token here: the live set is the file's
    metrics = client.get("/metrics").text
    assert f'streamrec_model_info{{checksum="{health["model_checksum"]}"' in metrics


def test_the_fleet_needs_the_store(block_model_path):
    token = "fleet-route-admin-token"
    app = create_app(Settings(model_path=block_model_path, admin_token=token, _env_file=None))
    with TestClient(app) as c:
        r = c.get("/admin/fleet", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 409 and "REDIS_URL" in r.json()["detail"]
        assert c.get("/admin/fleet").status_code == 401


def test_a_served_model_is_freed_by_its_reference_count(demo_size_model):
    """A worker freezes what is alive after startup out of the collector's full passes; a model
    replaced later is then freed only if it holds no reference cycles: loaded, served, ranked for a
    viewer with held sessions and dropped with the collector off, it is gone."""
    import gc
    import weakref

    from streamrec.model.scoring import fold_sessions, rank
    from streamrec.serve.serving import ServedModel

    enabled = gc.isenabled()
    gc.disable()
    try:
        model = load_model(demo_size_model)
        served = ServedModel(model)
        folded = fold_sessions(model, 0, [(model.streamers.name(0), model.time_max, model.time_max + 1)], 0)
        assert folded is not None
        rank(model, 0, 10, False, folded=folded)
        served.recommend(model.users.name(0), 10, False)
        gone = weakref.ref(model)
        del model, served, folded
        assert gone() is None, "a model is held in a reference cycle: a frozen worker would never free it"
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("freeze", [True, False])
def test_a_service_worker_freezes_what_is_alive_after_startup(block_model_path, freeze):
    """The service's own app (platform.py's worker, `uvicorn streamrec.serve.app:app`) keeps what
    its startup left alive out of the collector's full passes; an app built for a test does not."""
    import gc

    gc.unfreeze()
    try:
        app = create_app(Settings(model_path=block_model_path, _env_file=None), freeze=freeze)
        with TestClient(app) as c:
            assert c.get("/recomendations/user/1").status_code == 200
            assert (gc.get_freeze_count() > 0) == freeze
    finally:
        gc.unfreeze()

"""Category and language filters against the real server: every source, the catalog file, what
a live set publishes over it, "popular now", empty answers and a bad catalog file."""

from __future__ import annotations

import shutil

import httpx2 as httpx
import pytest

from tests.helpers import block_sessions
from tests.server.helpers import start_server, stop_server

TOKEN = "filter-admin-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOG = (
    "streamer_name,category,language,followers\n"
    "alpha0,Chess,en,1\nalpha1,Chess,en,1\nalpha2,Chess,en,1\n"
    "alpha3,Art,de,1\nalpha4,Art,de,1\nalpha5,Art,de,1\n"
    "bravo0,chess,es,1\nbravo1,Chess,es,1\nbravo2,Chess,es,1\n"
    "bravo3,Music,en,1\n"  # bravo4 and bravo5: not in the catalog
)
CHESS = {"alpha0", "alpha1", "alpha2", "bravo0", "bravo1", "bravo2"}
ART = {"alpha3", "alpha4", "alpha5"}


@pytest.fixture(scope="module")
def server(block_model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filters")
    model = tmp / "model.pkl"
    shutil.copy(block_model_path, model)
    catalog = tmp / "streamers.csv"
    catalog.write_text(CATALOG)
    proc, base = start_server(model, ADMIN_TOKEN=TOKEN, STREAMERS_PATH=str(catalog))
    client = httpx.Client(base_url=base, timeout=10)
    yield client, catalog
    client.close()
    stop_server(proc)


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["streamer_name"] for item in response.json()["recommendations"]]


def watched(uid: str) -> set[str]:
    frame = block_sessions()
    return set(frame.loc[frame["uid"].astype(str) == uid, "streamer_name"])


def test_personal_lists_hold_exactly_the_streamers_that_pass(server):
    client, _ = server
    got = names(client.get("/recomendations/user/4", params={"k": 10, "category": "CHESS"}))
    assert set(got) == CHESS and len(got) == 6  # min(k, streamers that pass): topped up from popular
    assert got[0] in watched("4") | CHESS  # own audience first
    new = names(client.get("/recomendations/user/4", params={"k": 10, "category": "chess", "exclude_watched": "1"}))
    assert set(new) == CHESS - watched("4")
    both = names(client.get("/recomendations/user/40", params={"k": 10, "language": "EN, de"}))
    assert set(both) == CHESS - {"bravo0", "bravo1", "bravo2"} | ART | {"bravo3"}
    assert len(names(client.get("/recomendations/user/40", params={"k": 2, "language": "es"}))) == 2


def test_recent_popular_and_similar_are_filtered_too(server):
    client, _ = server
    recent = client.get("/recomendations/user/newcomer", params={"recent": "alpha0,alpha1", "category": "art"})
    assert recent.json()["source"] == "recent" and set(names(recent)) == ART
    popular = client.get("/recomendations/user/newcomer", params={"k": 5, "category": "music"})
    assert popular.json()["source"] == "popular" and names(popular) == ["bravo3"]
    similar = client.get("/streamers/alpha0/similar", params={"k": 10, "category": "chess"}).json()["similar"]
    assert {s["streamer_name"] for s in similar} == CHESS - {"alpha0"}


def test_a_filter_nothing_passes_is_an_empty_list(server):
    client, _ = server
    for params in ({"category": "poker"}, {"language": "xx"}, {"category": "art", "language": "en"}):
        assert names(client.get("/recomendations/user/4", params=params)) == []
        assert names(client.get("/recomendations/user/nobody", params=params)) == []
    r = client.get("/streamers/alpha0/similar", params={"category": "poker"})
    assert r.status_code == 200 and r.json()["similar"] == []


def test_live_metadata_wins_over_the_catalog_and_popular_now_counts_viewers(server):
    client, _ = server
    live = [
        {"streamer_name": "alpha0", "category": "Poker", "viewers": 5},  # the catalog says Chess
        "alpha3",  # the catalog's Art, de
        {"streamer_name": "bravo4", "category": "chess", "language": "en", "viewers": 50},  # not in the catalog
        {"streamer_name": "bravo0", "viewers": 10},
    ]
    status = client.put("/live", json={"streamers": live}, headers=AUTH).json()
    assert status["categories"] == {"Chess": 2, "Art": 1, "Poker": 1}
    assert status["languages"] == {"en": 2, "de": 1, "es": 1}  # alpha0 published no language: the catalog's
    chess_now = names(client.get("/recomendations/user/40", params={"live_only": "1", "category": "chess"}))
    assert set(chess_now) == {"bravo4", "bravo0"}
    assert names(client.get("/recomendations/user/4", params={"live_only": "1", "category": "poker"})) == ["alpha0"]
    now = client.get("/recomendations/user/newcomer", params={"live_only": "1"}).json()["recommendations"]
    assert [(r["streamer_name"], r["score"]) for r in now[:3]] == [("bravo4", 50.0), ("bravo0", 10.0), ("alpha0", 5.0)]
    chess_popular = names(client.get("/recomendations/user/newcomer", params={"live_only": "1", "category": "chess"}))
    assert chess_popular == ["bravo4", "bravo0"]


def test_a_bad_catalog_on_reload_keeps_what_was_served(server):
    client, catalog = server
    before = names(client.get("/recomendations/user/4", params={"k": 10, "category": "chess"}))
    good = catalog.read_text()
    catalog.write_text(good + "bravo5,Chess\n")
    try:
        r = client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 409 and f"{catalog}, line 12: expected 4 fields" in r.json()["detail"]
        assert names(client.get("/recomendations/user/4", params={"k": 10, "category": "chess"})) == before
    finally:
        catalog.write_text(good)
    assert client.post("/admin/reload", headers=AUTH).status_code == 200


def test_a_bad_catalog_at_startup_is_one_line_and_the_service_serves(block_model_path, tmp_path):
    catalog = tmp_path / "streamers.csv"
    catalog.write_text("name,category\nalpha0,Chess\n")
    proc, base = start_server(block_model_path, STREAMERS_PATH=str(catalog))
    try:
        assert httpx.get(f"{base}/health").json()["model_loaded"] is True
        assert names(httpx.get(f"{base}/recomendations/user/4", params={"category": "chess"})) == []
        assert len(names(httpx.get(f"{base}/recomendations/user/4", params={"k": 3}))) == 3
    finally:
        log = stop_server(proc)
    lines = [line for line in log.splitlines() if "streamer catalog not loaded" in line]
    assert len(lines) == 1 and f"{catalog}, line 1: expected a header with streamer_name" in lines[0]

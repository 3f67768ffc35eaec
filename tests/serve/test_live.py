"""Availability, similar streamers and viewers known only by recent history, against the real
server; and the ranking paths behind them against the precomputed lists."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import pytest

from streamrec.model.model_file import load_model
from streamrec.model.scoring import rank
from tests.helpers import GROUP_A, GROUP_B
from tests.server.helpers import run_cli, start_server, stop_server

TOKEN = "live-admin-token-0001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIVE = ["alpha0", "alpha1", "alpha2", "bravo0", "ghost-streamer", "alpha0"]  # one unknown, one repeated


@pytest.fixture(scope="module")
def model(block_model_path):
    return load_model(block_model_path)


@pytest.fixture(scope="module")
def server(block_model_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, ADMIN_TOKEN=TOKEN)
    client = httpx.Client(base_url=base, timeout=10)
    # Before any live set: live_only is a 409 that says why, GET /live says none.
    r = client.get("/recomendations/user/1", params={"live_only": "true"})
    assert r.status_code == 409 and "PUT /live" in r.json()["detail"]
    assert client.get("/streamers/alpha0/similar", params={"live_only": "true"}).status_code == 409
    assert client.get("/live").json() == {
        "version": None,
        "live": 0,
        "unknown": 0,
        "since": None,
        "categories": {},
        "languages": {},
    }
    r = client.put("/live", json={"streamers": LIVE}, headers=AUTH)
    assert r.status_code == 200, r.text
    yield client, path
    client.close()
    stop_server(proc)


def names(response) -> list[str]:
    return [item["streamer_name"] for item in response.json()["recommendations"]]


def test_publishing_needs_the_token_and_counts_unknown_names(server):
    client, _ = server
    assert client.put("/live", json={"streamers": ["alpha0"]}).status_code == 401
    assert client.put("/live", json={"streamers": ["alpha0"]}, headers={"Authorization": "Bearer x"}).status_code == 403
    status = client.get("/live").json()
    assert status["live"] == 4 and status["unknown"] == 1 and status["since"]


def test_live_streamers_may_carry_category_language_and_viewers(server):
    client, _ = server
    mixed = [
        "alpha0",
        {"streamer_name": "alpha1", "category": "Chess", "language": "en", "viewers": 120},
        {"streamer_name": "alpha2", "category": "chess", "language": None, "viewers": None},
        {"streamer_name": "bravo0", "category": "Just Chatting", "language": "DE"},
        {"streamer_name": "ghost-streamer", "category": "Chess", "language": "en"},  # unknown: not counted
    ]
    try:
        status = client.put("/live", json={"streamers": mixed}, headers=AUTH).json()
        assert status["live"] == 4 and status["unknown"] == 1
        assert status["categories"] == {"Chess": 2, "Just Chatting": 1}  # matched case-insensitively
        assert status["languages"] == {"en": 1, "DE": 1}
        assert client.get("/live").json()["categories"] == status["categories"]
        bad = client.put("/live", json={"streamers": [{"streamer_name": "alpha0", "viewers": -1}]}, headers=AUTH)
        assert bad.status_code == 422
        assert client.put("/live", json={"streamers": [{"category": "Chess"}]}, headers=AUTH).status_code == 422
    finally:
        assert client.put("/live", json={"streamers": LIVE}, headers=AUTH).status_code == 200


def test_live_only_personal_ranks_only_live_streamers(server, model):
    client, _ = server
    for uid in ("1", "2", "40"):
        got = names(client.get(f"/recomendations/user/{uid}", params={"live_only": "true", "k": 100}))
        assert sorted(got) == ["alpha0", "alpha1", "alpha2", "bravo0"]  # min(k, live) distinct
    watched = set(model.streamers.ids[model.history(model.users.get("1"))[0]])
    got = names(client.get("/recomendations/user/1", params={"live_only": "true", "exclude_watched": "true", "k": 100}))
    assert set(got) == {"alpha0", "alpha1", "alpha2", "bravo0"} - watched


def test_live_only_follows_the_viewers_audience(server):
    client, _ = server
    assert names(client.get("/recomendations/user/45", params={"live_only": "true", "k": 1})) == ["bravo0"]
    assert names(client.get("/recomendations/user/5", params={"live_only": "true", "k": 3}))[0].startswith("alpha")


def test_live_only_popular_is_the_live_part_of_popularity(server, model):
    client, _ = server
    r = client.get("/recomendations/user/stranger", params={"live_only": "true", "k": 10})
    assert r.json()["source"] == "popular"
    expected = [n for n in model.streamers.ids[model.popular_ranking] if n in set(LIVE)]
    assert names(r) == expected


def test_recent_history_ranks_an_unknown_viewer(server):
    client, _ = server
    r = client.get("/recomendations/user/stranger", params={"recent": "alpha0,alpha1,not-a-streamer", "k": 6})
    assert r.json()["source"] == "recent"
    assert set(names(r)) == set(GROUP_A)  # what they watched, then their audience's streamers
    r = client.get("/recomendations/user/stranger", params={"recent": "bravo1", "exclude_watched": "true", "k": 5})
    assert set(names(r)) == set(GROUP_B) - {"bravo1"}
    r = client.get("/recomendations/user/stranger", params={"recent": "bravo1", "live_only": "true", "k": 2})
    assert r.json()["source"] == "recent" and names(r)[0] == "bravo0"


def test_recent_with_no_known_name_falls_back_to_popular(server):
    client, _ = server
    r = client.get("/recomendations/user/stranger", params={"recent": "nobody-knows,,  ", "k": 3})
    assert r.json()["source"] == "popular" and len(names(r)) == 3


def test_recent_is_ignored_for_a_known_viewer(server):
    client, _ = server
    plain = client.get("/recomendations/user/3", params={"k": 5}).json()
    with_recent = client.get("/recomendations/user/3", params={"k": 5, "recent": "bravo0"}).json()
    assert with_recent == plain


def test_similar_streamers_share_the_audience_never_itself(server):
    client, _ = server
    r = client.get("/streamers/alpha0/similar", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["streamer_name"] == "alpha0"
    assert {s["streamer_name"] for s in body["similar"]} == set(GROUP_A) - {"alpha0"}
    scores = [s["score"] for s in body["similar"]]
    assert scores == sorted(scores, reverse=True)
    live = client.get("/streamers/bravo3/similar", params={"k": 10, "live_only": "true"}).json()["similar"]
    assert [s["streamer_name"] for s in live][0] == "bravo0"
    assert {s["streamer_name"] for s in live} <= set(LIVE)


def test_similar_unknown_is_404_and_k_is_checked(server):
    client, _ = server
    r = client.get("/streamers/no-such-streamer/similar")
    assert r.status_code == 404 and "no-such-streamer" in r.json()["detail"]
    assert client.get("/streamers/alpha0/similar", params={"k": 0}).status_code == 422


def test_the_live_set_survives_a_model_reload(server, block_csv):
    client, path = server
    before = client.get("/live").json()
    result = run_cli(
        "als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "2", "--random-state", "9"
    )
    assert result.returncode == 0, result.stderr
    assert client.post("/admin/reload", headers=AUTH).status_code == 200
    assert client.get("/live").json() == before
    got = names(client.get("/recomendations/user/1", params={"live_only": "true", "k": 100}))
    assert sorted(got) == ["alpha0", "alpha1", "alpha2", "bravo0"]


# --- the on-request ranking agrees with the precomputed lists --------------------------------


@pytest.mark.parametrize("exclude_watched", [False, True])
def test_ranking_among_all_candidates_equals_the_precomputed_list(model, exclude_watched):
    for row in range(model.n_users):
        watched = model.history(row)[0]
        candidates = np.union1d(model.catalog, watched)
        got_rows, got_scores = rank(model, row, 10, exclude_watched, among=model.candidates(candidates))
        want_rows, want_scores = rank(model, row, 10, exclude_watched)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
        assert got_rows.tolist() == want_rows.tolist()


def test_every_worker_serves_the_published_live_set(block_model_path, tmp_path):
    path = tmp_path / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, "--workers", "2", ADMIN_TOKEN=TOKEN)
    try:

        def ask(_) -> tuple[int, int, list[str]]:
            # One connection per thread, several at once, so that both workers must answer.
            with httpx.Client(base_url=base, timeout=10) as client:
                pid = client.get("/health").json()["worker_pid"]
                live = client.get("/live").json()["live"]
                r = client.get("/recomendations/user/2", params={"live_only": "true", "k": 5})
                return pid, live, sorted(names(r)) if r.status_code == 200 else []

        def from_both_workers() -> list[tuple[int, int, list[str]]]:
            answers: list[tuple[int, int, list[str]]] = []
            with ThreadPoolExecutor(16) as pool:
                for _ in range(20):
                    answers += list(pool.map(ask, range(32)))
                    if len({pid for pid, _, _ in answers}) == 2:
                        return answers
            raise AssertionError("only one worker answered")

        assert all(live == 0 for _, live, _ in from_both_workers())  # both up, nothing published
        published = ["bravo1", {"streamer_name": "bravo2", "category": "Chess", "language": "en", "viewers": 40}]
        r = httpx.put(f"{base}/live", json={"streamers": published}, headers=AUTH)
        assert r.status_code == 200
        time.sleep(1.5)  # workers look for a newer live set at most once a second
        answers = from_both_workers()
        assert all(live == 2 and got == ["bravo1", "bravo2"] for _, live, got in answers)
    finally:
        stop_server(proc)
    assert (tmp_path / "model.live.json").is_file()
    # A restarted server starts with the published set, and what was published with it.
    proc, base = start_server(path, ADMIN_TOKEN=TOKEN)
    try:
        status = httpx.get(f"{base}/live").json()
        assert status["live"] == 2 and status["categories"] == {"Chess": 1} and status["languages"] == {"en": 1}
    finally:
        stop_server(proc)


@pytest.mark.parametrize("exclude_watched", [False, True])
def test_live_lists_ranked_in_advance_equal_ranking_on_request(model, exclude_watched):
    from streamrec.serve.live import LiveSet

    live = LiveSet.build(model, ["alpha0", "alpha3", "bravo1", "bravo4", "bravo5"])
    assert live.lists is not None
    for row in range(model.n_users):
        ahead_rows, ahead_scores = rank(
            model, row, 5, exclude_watched, among=live.candidates, live=True, lists=live.lists
        )
        now_rows, now_scores = rank(model, row, 5, exclude_watched, among=live.candidates, live=True)
        assert ahead_rows.tolist() == now_rows.tolist()
        np.testing.assert_allclose(ahead_scores, now_scores, rtol=1e-4, atol=1e-4)


def test_an_unwritable_live_path_is_a_clear_error_and_publishes_nothing(block_model_path, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    proc, base = start_server(block_model_path, ADMIN_TOKEN=TOKEN, LIVE_PATH=str(blocker / "live.json"))
    try:
        r = httpx.put(f"{base}/live", json={"streamers": ["alpha0"]}, headers=AUTH)
        assert r.status_code == 503 and "cannot write the live set" in r.json()["detail"]
        assert httpx.get(f"{base}/live").json()["live"] == 0
    finally:
        stop_server(proc)

"""POST /events and DELETE /admin/events on the real app with its lifespan (TestClient): who may
send, what a bad batch gets, the log's cap, and a viewer's events deleted."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from streamrec.events.log import FileLog, read_all
from streamrec.model.model_file import load_model
from streamrec.serve.app import create_app
from streamrec.settings import Settings, SettingsError
from tests.helpers import GROUP_B

INGEST = "ingest-token-for-the-tests"
ADMIN = "admin-token-for-the-tests"
BEARER = {"Authorization": f"Bearer {INGEST}"}


def batch(*sessions) -> dict:
    return {
        "sessions": [
            {"uid": u, "session_id": 1, "streamer_name": s, "time_start": a, "time_end": b} for u, s, a, b in sessions
        ]
    }


@pytest.fixture
def app_and_log(block_model_path, tmp_path):
    settings = Settings(
        model_path=block_model_path,
        ingest_token=INGEST,
        admin_token=ADMIN,
        events_path=tmp_path / "events",
        _env_file=None,
    )
    with TestClient(create_app(settings)) as client:
        yield client, FileLog(tmp_path / "events")


def names(client, uid: str, **params) -> tuple[str, list[str]]:
    body = client.get(f"/recomendations/user/{uid}", params={"k": 12, **params}).json()
    return body["source"], [i["streamer_name"] for i in body["recommendations"]]


def test_the_next_request_is_ranked_with_the_batch(app_and_log, block_model_path):
    client, log = app_and_log
    t = load_model(block_model_path).time_max
    before = names(client, "1")
    other = names(client, "2")
    sent = batch(*[("1", GROUP_B[0], t + i, t + i + 1) for i in range(0, 10, 2)], ("newcomer", GROUP_B[1], t, t + 2))
    r = client.post("/events", json=sent, headers=BEARER)
    assert r.status_code == 202, r.text
    assert r.json() == {"received": 6, "accepted": 6, "dropped": {}, "position": str(log.end())}
    source, after = names(client, "1")
    # bravo0, of the other audience, was last; watched five times now, it comes right after the
    # viewer's own three streamers, ahead of every streamer they never watched
    assert source == "personal" and before[1].index(GROUP_B[0]) > 3 and after.index(GROUP_B[0]) == 3
    assert GROUP_B[0] not in names(client, "1", exclude_watched="true")[1]
    assert names(client, "newcomer")[0] == "recent"
    assert names(client, "newcomer")[1][0] == GROUP_B[1]
    assert names(client, "2") == other  # a viewer without events: as before
    assert [s for c in read_all(log, None) for _, s in c.sessions][0] == ("1", GROUP_B[0], t, t + 1)


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({}, 401, "expected 'Authorization: Bearer <ingest token>'"),
        ({"Authorization": "Bearer wrong-token-of-some-length"}, 403, "wrong ingest token"),
        ({"Authorization": f"Bearer {ADMIN}"}, 403, "wrong ingest token"),  # the admin is not the pipeline
    ],
)
def test_only_the_ingest_token_may_send(app_and_log, headers, status, words):
    client, log = app_and_log
    r = client.post("/events", json=batch(("1", "alpha0", 1, 2)), headers=headers)
    assert r.status_code == status and words in r.json()["detail"]
    assert log.end() == 0


def test_the_token_is_checked_before_the_body_is_read(app_and_log):
    client, _ = app_and_log
    reads = 0

    def body():
        nonlocal reads
        for _ in range(64):
            reads += 1
            yield b"x" * (1 << 16)

    r = client.post("/events", content=body(), headers={"Authorization": "Bearer wrong-token-of-some-length"})
    assert r.status_code == 403 and reads <= 1


def test_ingest_is_off_without_a_token_and_needs_a_long_one(block_model_path, tmp_path):
    with TestClient(create_app(Settings(model_path=block_model_path, _env_file=None))) as client:
        r = client.post("/events", json=batch(("1", "alpha0", 1, 2)), headers=BEARER)
        assert r.status_code == 404 and "set INGEST_TOKEN" in r.json()["detail"]
    with pytest.raises(SettingsError, match="INGEST_TOKEN: expected at least 16 characters"):
        create_app(Settings(model_path=block_model_path, ingest_token="short", _env_file=None))


def test_a_malformed_batch_is_a_422_and_nothing_is_kept(app_and_log):
    client, log = app_and_log
    sent = batch(("1", "alpha0", 1, 2))
    sent["sessions"].append({"uid": "2", "session_id": 1, "streamer_name": "alpha1", "time_start": "soon"})
    r = client.post("/events", json=sent, headers=BEARER)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "sessions", 1, "time_start"] in locs and ["body", "sessions", 1, "time_end"] in locs
    assert log.end() == 0
    r = client.post("/events", content=b"{not json", headers=BEARER)
    assert r.status_code == 422 and "invalid JSON" in r.json()["detail"][0]["msg"]


def test_a_time_far_ahead_is_refused(app_and_log, block_model_path):
    client, log = app_and_log
    t = load_model(block_model_path).time_max
    r = client.post("/events", json=batch(("1", "alpha0", t, t + 301)), headers=BEARER)
    assert r.status_code == 422 and f"no later than {t + 300}" in r.json()["detail"][0]["msg"]
    # a replay in time order passes: each batch's newest time moves "now" on
    for step in range(3):
        start = t + 250 * step
        assert (
            client.post("/events", json=batch(("1", "alpha0", start, start + 250)), headers=BEARER).status_code == 202
        )


def test_dropped_rows_are_counted_and_a_batch_of_only_those_writes_nothing(app_and_log):
    client, log = app_and_log
    r = client.post("/events", json=batch(("  ", "alpha0", 1, 2), ("1", "alpha0", 9, 3)), headers=BEARER)
    assert r.status_code == 202
    assert r.json() == {
        "received": 2,
        "accepted": 0,
        "dropped": {"blank uid": 1, "time_end before time_start": 1},
        "position": None,
    }
    assert log.end() == 0


def test_a_body_over_the_limit_is_a_413(block_model_path, tmp_path):
    settings = Settings(
        model_path=block_model_path,
        ingest_token=INGEST,
        events_path=tmp_path,
        max_body_bytes=2048,
        _env_file=None,
    )
    with TestClient(create_app(settings)) as client:
        sent = json.dumps(batch(*[("1", "alpha0", i, i + 1) for i in range(100)]))
        r = client.post("/events", content=sent, headers={**BEARER, "Content-Type": "application/json"})
        assert r.status_code == 413 and "MAX_BODY_BYTES" in r.json()["detail"]


def test_at_the_cap_ingest_answers_503_and_keeps_everything(block_model_path, tmp_path):
    log = FileLog(tmp_path)
    filler = [("filler", "alpha0", i, i + 1) for i in range(60_000)]
    log.append(filler)  # not in any model
    size = log.size()
    assert size > 1 << 20
    settings = Settings(
        model_path=block_model_path, ingest_token=INGEST, events_path=tmp_path, events_max_mb=1, _env_file=None
    )
    with TestClient(create_app(settings)) as client:
        r = client.post("/events", json=batch(("1", "alpha0", 1, 2)), headers=BEARER)
        assert r.status_code == 503
        assert "EVENTS_MAX_MB" in r.json()["detail"] and "als_fit.py --update --events" in r.json()["detail"]
    assert log.size() == size  # nothing dropped, nothing added


def test_deleting_a_viewers_events_deletes_them_from_the_log_and_the_workers(app_and_log, block_model_path):
    client, log = app_and_log
    t = load_model(block_model_path).time_max
    before = names(client, "1")
    client.post("/events", json=batch(("1", GROUP_B[0], t, t + 2), ("2", GROUP_B[0], t, t + 2)), headers=BEARER)
    assert names(client, "1") != before
    r = client.delete("/admin/events", params={"user_id": "1"}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json() == {"user_id": "1", "deleted": 1}
    assert names(client, "1") == before
    assert [s[0] for c in read_all(log, None) for _, s in c.sessions] == ["2"]
    assert client.delete("/admin/events", params={"user_id": "1"}).status_code == 401
    assert client.delete("/admin/events", params={"user_id": "1"}, headers=BEARER).status_code == 403


def test_sessions_another_worker_wrote_are_held_within_a_second(app_and_log, block_model_path):
    client, log = app_and_log
    t = load_model(block_model_path).time_max
    before = names(client, "1")
    assert before[1].index(GROUP_B[2]) > 3
    FileLog(log.folder).append([("1", GROUP_B[2], t + i, t + i + 1) for i in range(5)])  # as another worker
    deadline = time.monotonic() + 1.0
    while names(client, "1")[1].index(GROUP_B[2]) != 3:
        assert time.monotonic() < deadline, "not held within a second"
        time.sleep(0.05)
    assert names(client, "1") != before

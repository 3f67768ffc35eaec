"""The event log in the shared store (a real redis-server with its append-only file synced per
write): a batch sent to one host changes the next request on another within a second, survives
kill -9 of the store and of a host, a viewer's events are deleted everywhere, and the update reads
and trims the stream. A store that cannot confirm a write is on disk gets no acknowledgement."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from streamrec.events.log import Chunk, add_entries
from streamrec.model.model_file import load_model
from tests.helpers import GROUP_B
from tests.server.helpers import RedisServer, clean_env, run_cli, start_server, stop_server
from tests.server.test_events import batch, kill_all, names, wait_for

INGEST, ADMIN = "ingest-token-for-the-tests", "admin-token-for-the-tests"


def host(folder: Path, model: Path, url: str):
    (folder / "models").mkdir(parents=True)
    shutil.copy(model, folder / "models" / "model.pkl")
    env = {"REDIS_URL": url, "INGEST_TOKEN": INGEST, "ADMIN_TOKEN": ADMIN, "LOG_LEVEL": "INFO"}
    return (*start_server(folder / "models" / "model.pkl", **env), env)


@pytest.fixture
def store(tmp_path):
    server = RedisServer(tmp_path / "redis", durable=True).start()
    yield server
    server.stop()


def test_a_batch_reaches_every_host_survives_kills_and_is_taken_in_by_the_update(store, tmp_path, block_model_path):
    t = load_model(block_model_path).time_max
    a, base_a, env = host(tmp_path / "a", block_model_path, store.url)
    b, base_b, _ = host(tmp_path / "b", block_model_path, store.url)
    try:
        assert names(base_b, "1")[1].index(GROUP_B[0]) > 3
        sent = batch(
            *[("1", GROUP_B[0], t + i, t + i + 1) for i in range(0, 10, 2)], ("newcomer", GROUP_B[1], t, t + 2)
        )
        r = httpx.post(f"{base_a}/events", json=sent, headers={"Authorization": f"Bearer {INGEST}"})
        assert r.status_code == 202 and r.json()["accepted"] == 6
        assert "-" in r.json()["position"]  # a stream id
        wait_for(lambda: names(base_b, "1")[1].index(GROUP_B[0]) == 3, 1.0, "host b did not serve it within 1 s")
        assert names(base_b, "newcomer")[0] == "recent"

        # the store killed and restarted from its append-only file, then host b killed and restarted
        store.stop()
        store.start()
        kill_all(b)
        b, base_b = start_server(tmp_path / "b" / "models" / "model.pkl", **env)
        wait_for(lambda: names(base_b, "1")[1].index(GROUP_B[0]) == 3, 2.0, "lost across the kills")

        # a viewer's events deleted on host a: gone from the stream and from host b
        r = httpx.delete(
            f"{base_a}/admin/events", params={"user_id": "newcomer"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert r.status_code == 200 and r.json()["deleted"] == 1
        wait_for(lambda: names(base_b, "newcomer")[0] == "popular", 1.0, "host b still holds the deleted viewer")
        client = redis.Redis.from_url(store.url)
        chunk = Chunk()
        add_entries(chunk, client.xrange("streamrec:sessions"))
        assert [s[0] for _, s in chunk.sessions] == ["1"] * 5 and chunk.forget[-1][1] == "newcomer"

        # the update reads the stream and trims it after the model is written
        model = tmp_path / "a" / "models" / "model.pkl"
        result = run_cli("als_fit.py", "--update", "--events", "--model", str(model), env=clean_env(**env))
        assert result.returncode == 0, result.stderr
        assert "5 sessions up to position" in result.stdout
        updated = load_model(model)
        assert updated.users.get("newcomer") is None  # deleted before the update: never learned
        assert updated.metadata["events"]["log"].startswith("redis:") and store.password not in str(updated.metadata)
        assert client.xlen("streamrec:sessions") == 0
        client.close()
    finally:
        stop_server(a)
        stop_server(b)


def test_a_store_that_does_not_sync_its_writes_gets_no_acknowledgement(tmp_path, block_model_path):
    volatile = RedisServer(tmp_path / "redis").start()  # no append-only file
    proc, base, _ = host(tmp_path / "a", block_model_path, volatile.url)
    try:
        r = httpx.post(
            f"{base}/events", json=batch(("1", "alpha0", 1, 2)), headers={"Authorization": f"Bearer {INGEST}"}
        )
        assert r.status_code == 503
        assert "appendfsync always" in r.json()["detail"] and "not acknowledged" in r.json()["detail"]
        assert volatile.password not in r.text
    finally:
        log = stop_server(proc)
        volatile.stop()
    assert volatile.password not in log and "appendfsync always" in log

"""Several serving hosts, one store: two `platform.py` processes, each in its own working directory
with its own copy of the model file and its own port (two workers on one of them), and one real
redis-server with a password. What one host is told, every worker of every host serves; the
store lost under load costs no GET and makes writes 503; the store back, writes work again with
no restart; and the password appears nowhere."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import pytest
import redis

from streamrec.serve.store import Store
from tests.server.helpers import ROOT, RedisServer, clean_env, run_cli, start_process, stop_server

TOKEN = "fleet-test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USERS = [str(uid) for uid in range(1, 61, 6)]  # of the block log: 1-30 watch alpha*, 31-60 bravo*


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def start_host(folder: Path, model: Path, store: RedisServer | SimpleNamespace, name: str = "", workers: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "model.pkl")  # every host its own copy
    env = clean_env(
        REDIS_URL=store.url,
        REDIS_PREFIX="fleet-test:",
        ADMIN_TOKEN=TOKEN,
        INSTANCE_NAME=name or folder.name,
        LOG_LEVEL="INFO",
        WORKERS=str(workers),
    )
    proc, base = start_process([str(ROOT / "platform.py"), "--model", "model.pkl"], env=env, cwd=folder)
    proc.folder = folder
    return proc, base


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, block_model_path, store):
    root = tmp_path_factory.mktemp("hosts")
    a = start_host(root / "host-a", block_model_path, store, workers=2)
    b = start_host(root / "host-b", block_model_path, store)
    yield a, b
    for proc, _ in (a, b):
        stop_server(proc)


def workers_of(base: str, want: int, timeout: float = 30) -> dict[int, dict]:
    """/health of each worker behind `base` (new connections land on any worker), by pid."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        health = httpx.get(f"{base}/health", timeout=5).json()
        seen[health["worker_pid"]] = health
    assert len(seen) == want, f"expected {want} workers behind {base}; found {len(seen)}"
    return seen


def until(condition, timeout: float, step: float = 0.01) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


def every_worker(base: str, pids: set[int], check) -> bool:
    """Whether `check(health)` holds for every worker in `pids` (asked on new connections until
    each answered once since this call)."""
    answered: set[int] = set()
    for _ in range(200):
        health = httpx.get(f"{base}/health", timeout=5).json()
        if not check(health):
            return False
        answered.add(health["worker_pid"])
        if answered >= pids:
            return True
    return False


def test_a_live_set_published_on_one_host_is_served_by_every_worker_of_both_within_a_second(hosts):
    (_, a), (_, b) = hosts
    pids = {base: set(workers_of(base, n)) for base, n in ((a, 2), (b, 1))}
    for names in (["alpha0", "alpha1", "bravo2"], ["bravo0", "alpha5"]):
        put = httpx.put(f"{a}/live", json={"streamers": names}, headers=AUTH, timeout=30)
        assert put.status_code == 200, put.text
        answered = time.monotonic()
        version = put.json()["version"]
        for base in (a, b):
            until(lambda base=base, v=version: every_worker(base, pids[base], lambda h: h["live_version"] == v), 1.0)
        assert time.monotonic() - answered < 1.0
        assert httpx.get(f"{a}/live").json() == httpx.get(f"{b}/live").json()
        for user in USERS:
            got = httpx.get(f"{b}/recomendations/user/{user}", params={"live_only": "true", "k": 20}).json()
            assert {r["streamer_name"] for r in got["recommendations"]} <= set(names)


def test_a_host_started_later_takes_up_the_live_set_and_the_fleet_lists_every_worker(
    hosts, store, tmp_path, block_model_path
):
    (_, a), (_, b) = hosts
    live = httpx.get(f"{a}/live").json()
    late = start_host(tmp_path / "host-late", block_model_path, store)
    try:
        assert httpx.get(f"{late[1]}/live").json() == live
        until(lambda: len(httpx.get(f"{b}/admin/fleet", headers=AUTH).json()["workers"]) == 4, 5, 0.2)
        fleet = httpx.get(f"{b}/admin/fleet", headers=AUTH).json()
        assert sorted(w["instance"] for w in fleet["workers"]) == ["host-a", "host-a", "host-b", "host-late"]
        assert fleet["lagging"] == []
        assert all(w["ready"] for w in fleet["workers"])
    finally:
        stop_server(late[0])
    assert httpx.get(f"{a}/admin/fleet").status_code == 401


def test_a_reload_on_one_host_reaches_every_worker_of_both_and_a_host_with_another_file_says_so(
    hosts, tmp_path, block_csv, block_model_path
):
    (proc_a, a), (proc_b, b) = hosts
    pids = {base: set(workers_of(base, n)) for base, n in ((a, 2), (b, 1))}
    first = httpx.post(f"{a}/admin/reload", headers=AUTH, timeout=30).json()  # the fleet's model: the first
    assert first["workers_notified"] == 3
    second = tmp_path / "second.pkl"
    trained = run_train(block_csv, second)
    assert trained.returncode == 0, trained.stderr
    for folder in (proc_a.folder, proc_b.folder):  # the operator's copy by rename, to each host
        shutil.copy(second, folder / "incoming.pkl")
        os.replace(folder / "incoming.pkl", folder / "model.pkl")
    time.sleep(1.5)  # a replaced file alone is not taken up: the fleet serves the first model
    for base in (a, b):
        assert every_worker(base, pids[base], lambda h: h["model_checksum"] == first["checksum"])
    reloaded = httpx.post(f"{b}/admin/reload", headers=AUTH, timeout=30)
    assert reloaded.status_code == 200, reloaded.text
    new = reloaded.json()["checksum"]
    assert new != first["checksum"] and reloaded.json()["workers_notified"] == 3
    for base in (a, b):
        until(lambda base=base: every_worker(base, pids[base], lambda h: h["model_checksum"] == new), 5)
    # Host A gets the first model back, B keeps the second: a reload on A reaches B, which says so.
    shutil.copy(block_model_path, proc_a.folder / "incoming.pkl")
    os.replace(proc_a.folder / "incoming.pkl", proc_a.folder / "model.pkl")
    back = httpx.post(f"{a}/admin/reload", headers=AUTH, timeout=30).json()
    assert back["checksum"] == first["checksum"]
    until(lambda: every_worker(b, pids[b], lambda h: h["fleet_model_checksum"] == first["checksum"]), 5)
    assert every_worker(b, pids[b], lambda h: h["model_checksum"] == new)  # still the one it has
    fleet = httpx.get(f"{a}/admin/fleet", headers=AUTH).json()
    until(lambda: httpx.get(f"{a}/admin/fleet", headers=AUTH).json()["lagging"] == [f"host-b/{proc_b.pid}"], 5, 0.2)
    log_b = Path(proc_b.log_path).read_text()
    assert f"model.pkl holds model {new}" in log_b and f"the fleet serves {first['checksum']}" in log_b
    assert fleet["workers"]


def run_train(data: Path, model: Path):
    return run_cli("als_fit.py", "--data", str(data), "--model", str(model), "--factors", "2", "--iterations", "10")


def test_a_value_in_the_store_that_does_not_validate_is_refused_in_one_line_and_the_set_kept(hosts, store):
    (proc_a, a), (proc_b, b) = hosts
    before = httpx.get(f"{b}/live").json()
    held = httpx.get(f"{b}/health").json()["live_version"]
    epoch, number = held.split(".")
    bogus = f"{epoch}.{int(number) + 1000}"
    client = redis.Redis(host="127.0.0.1", port=store.port, password=store.password)
    client.hset("fleet-test:live", mapping={"version": bogus, "body": b'{"since": "yesterday", "streamers": 7}'})
    client.publish("fleet-test:events", f"live {bogus}")
    time.sleep(2.5)  # the message and two checks on the timer
    for proc, base in ((proc_a, a), (proc_b, b)):
        assert httpx.get(f"{base}/live").json() == before
        lines = [line for line in Path(proc.log_path).read_text().splitlines() if f"version {bogus}" in line]
        assert len(lines) == (2 if base == a else 1), lines  # one line per worker
        assert "live set not taken up; still serving the set published at" in lines[0]
    put = httpx.put(f"{a}/live", json={"streamers": ["bravo1"]}, headers=AUTH, timeout=30)
    assert put.status_code == 200, put.text  # the next set is taken up as usual
    until(lambda: httpx.get(f"{b}/live").json()["live"] == 1, 2)
    client.close()


def test_a_host_whose_store_is_down_at_startup_serves_and_takes_up_the_live_set_when_it_is_back(
    tmp_path, block_model_path
):
    store = RedisServer(tmp_path / "redis-later")  # not started yet
    proc, base = start_host(tmp_path / "host-alone", block_model_path, store, name="alone")
    try:
        assert httpx.get(f"{base}/recomendations/user/1").json()["source"] == "personal"
        assert httpx.get(f"{base}/recomendations/user/nobody").json()["source"] == "popular"
        assert httpx.get(f"{base}/health").json()["store"] == "down"
        assert httpx.put(f"{base}/live", json={"streamers": ["alpha1"]}, headers=AUTH).status_code == 503
        store.start()
        body = b'{"since": "2026-11-30T12:00:00Z", "streamers": ["alpha2", "bravo3"]}'
        asyncio.run(publish_directly(store, body))
        until(lambda: httpx.get(f"{base}/live").json()["live"] == 2, 10, 0.1)  # backoff is at most 5 s
        assert httpx.get(f"{base}/health").json()["store"] == "up"
        text = Path(proc.log_path).read_text()
        assert text.count("is unreachable") == 1, text  # one line, however long it was down
        assert store.password not in text
    finally:
        stop_server(proc)
        store.stop()


async def publish_directly(server: RedisServer, body: bytes) -> None:
    """What PUT /live on another host does to the store (serve/store.py)."""
    store = Store(server.url, "fleet-test:")
    try:
        await store.publish_live(body)
    finally:
        await store.close()


def test_the_store_lost_under_load_fails_no_get_writes_503_and_work_again_once_it_is_back(hosts, store):
    (proc_a, a), (proc_b, b) = hosts
    results: list[int] = []
    stop = threading.Event()

    def load(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            i = 0
            while not stop.is_set():
                user = USERS[i % len(USERS)]
                params = {"live_only": "true"} if i % 3 == 0 else {}
                try:
                    results.append(client.get(f"/recomendations/user/{user}", params=params).status_code)
                except httpx.TransportError:
                    results.append(0)
                i += 1

    threads = [threading.Thread(target=load, args=(base,)) for base in (a, b, a, b)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    store.stop()
    time.sleep(1.5)
    put = httpx.put(f"{b}/live", json={"streamers": ["alpha3"]}, headers=AUTH, timeout=30)
    reload = httpx.post(f"{a}/admin/reload", headers=AUTH, timeout=30)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert len(results) > 200 and set(results) == {200}, f"{len(results)} GETs, statuses {set(results)}"
    for answer in (put, reload):
        assert answer.status_code == 503, answer.text
        detail = answer.json()["detail"]
        assert f"the store at redis://127.0.0.1:{store.port}/0 is unreachable" in detail and "\n" not in detail
        assert store.password not in detail
    assert httpx.get(f"{a}/health").json()["store"] == "down"
    store.start()  # empty: a new epoch
    until(
        lambda: httpx.put(f"{b}/live", json={"streamers": ["alpha4", "bravo4"]}, headers=AUTH).status_code == 200,
        15,
        0.2,
    )
    version = httpx.get(f"{b}/health").json()["live_version"]
    until(lambda: httpx.get(f"{a}/live").json()["live"] == 2, 5)  # newer than every set before the restart
    assert int(version.split(".")[0]) > 0
    for proc in (proc_a, proc_b):
        text = Path(proc.log_path).read_text()
        assert store.password not in text
        assert text.count("is unreachable") <= 3 * 2, text  # one line per worker when it went (and writes)
    assert store.password not in httpx.get(f"{a}/metrics").text


def test_a_host_reaches_the_store_over_tls_and_says_so_when_the_certificate_is_not_trusted(tmp_path, block_model_path):
    store = RedisServer(tmp_path / "redis-tls", tls=True).start()  # rediss://, its own CA
    try:
        proc, base = start_host(tmp_path / "host-tls", block_model_path, store, name="tls")
        try:
            put = httpx.put(f"{base}/live", json={"streamers": ["alpha1", "bravo2"]}, headers=AUTH)
            assert put.status_code == 200, put.text
            epoch, number = put.json()["version"].split(".")  # the store's version, not a file's
            assert int(epoch) > 0 and number == "1"
            assert httpx.get(f"{base}/health").json()["store"] == "up"
        finally:
            stop_server(proc)
        url = f"rediss://:{store.password}@127.0.0.1:{store.port}/0"  # the same server, its CA not given
        proc, base = start_host(tmp_path / "host-untrusted", block_model_path, SimpleNamespace(url=url), "untrusted")
        try:
            assert httpx.get(f"{base}/health").json()["store"] == "down"
            text = Path(proc.log_path).read_text()
            assert "the store at rediss://127.0.0.1" in text and "certificate verify failed" in text
            assert store.password not in text and url not in text
        finally:
            stop_server(proc)
    finally:
        store.stop()

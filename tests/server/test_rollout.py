"""Rollouts and metrics against a real two-worker server: a replaced model file reaches every
worker under load with no failed request and the live set carried over; a broken file is skipped;
POST /admin/reload reaches every worker; /metrics counts what both workers answered."""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.server.helpers import metric_value as value
from tests.server.helpers import run_cli, start_server, stop_server

TOKEN = "rollout-admin-token-01"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "/recomendations/user/{user_id:path}"


@pytest.fixture(scope="module")
def server(block_model_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("rollout") / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, "--workers", "2", ADMIN_TOKEN=TOKEN)
    yield base, path
    stop_server(proc)


def health_of_both(base: str, timeout: float = 20) -> dict[int, dict]:
    """/health of each of the two workers (fresh connections, several at once, until both answered)."""
    seen: dict[int, dict] = {}

    def ask(_):
        with httpx.Client(base_url=base, timeout=10) as client:
            body = client.get("/health").json()
            body["live"] = client.get("/live").json()["live"]
            return body

    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < 2 and time.monotonic() < deadline:
            for body in pool.map(ask, range(16)):
                seen[body["worker_pid"]] = body
    assert len(seen) == 2, "only one worker answered"
    return seen


def wait_for_both(base: str, created_at: str, timeout: float = 20) -> float:
    """Seconds until both workers serve the model created at `created_at`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(h["created_at"] == created_at for h in health_of_both(base).values()):
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not every worker took up the model created at {created_at}")


def retrain(block_csv, path, seed: int) -> str:
    """A new model file put in place of `path` the way als_fit.py puts it (atomically)."""
    out = path.with_name(f"next-{seed}.pkl")
    result = run_cli(
        "als_fit.py", "--data", str(block_csv), "--model", str(out), "--factors", "2", "--random-state", str(seed)
    )
    assert result.returncode == 0, result.stderr
    from streamrec.model.model_file import load_model

    created = load_model(out).metadata["created_at"]
    out.replace(path)
    return created


def scrape(base: str) -> str:
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_a_replaced_model_reaches_both_workers_under_load(server, block_csv):
    base, path = server
    published = ["alpha1", {"streamer_name": "bravo2", "category": "Chess", "language": "en", "viewers": 40}]
    assert httpx.put(f"{base}/live", json={"streamers": published}, headers=AUTH).status_code == 200
    before = health_of_both(base)
    assert len({h["created_at"] for h in before.values()}) == 1

    stop = threading.Event()
    statuses: list[int] = []

    def hammer():
        while not stop.is_set():  # a fresh connection each time: both workers answer
            statuses.append(httpx.get(f"{base}/recomendations/user/{len(statuses) % 70}", timeout=10).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.1)  # created_at has one-second resolution
        created = retrain(block_csv, path, seed=5)
        seconds = wait_for_both(base, created)
        print(f"both workers serve the replaced model {seconds:.1f} s after the rename")
        assert seconds < 10
        after = health_of_both(base)
        assert all(h["live"] == 2 for h in after.values())  # the live set carried over

        # A file that does not load is skipped: both keep serving what they had.
        failed_before = value(scrape(base), "streamrec_reloads_total", result="failed")
        broken = path.with_name("broken.pkl")
        broken.write_bytes(b"not a model")
        broken.replace(path)
        time.sleep(3)
        assert all(h["created_at"] == created for h in health_of_both(base).values())
        assert value(scrape(base), "streamrec_reloads_total", result="failed") == failed_before + 2
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) > 200
    assert set(statuses) == {200}


def test_admin_reload_reaches_both_workers(server, block_csv):
    base, path = server
    time.sleep(1.1)
    created = retrain(block_csv, path, seed=6)
    wait_for_both(base, created)
    done = value(scrape(base), "streamrec_reloads_total", result="done")
    r = httpx.post(f"{base}/admin/reload", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["created_at"] == created
    deadline = time.monotonic() + 10
    while value(scrape(base), "streamrec_reloads_total", result="done") < done + 2:
        assert time.monotonic() < deadline, "the reload did not reach the other worker"
        time.sleep(0.2)
    assert value(scrape(base), "streamrec_reloads_total", result="done") == done + 2


def test_metrics_count_the_requests_of_both_workers(server):
    base, _ = server
    text = scrape(base)
    start = value(text, "streamrec_requests_total", route=ROUTE)

    def ask(i):
        uid = str(i % 70) if i % 3 else f"stranger-{i}"
        return httpx.get(f"{base}/recomendations/user/{uid}", timeout=10).json()["source"]

    with ThreadPoolExecutor(8) as pool:
        sources = list(pool.map(ask, range(300)))
    assert len(set(h["worker_pid"] for h in health_of_both(base).values())) == 2
    time.sleep(1.5)  # each worker adds its tallies to the shared counts once a second
    for _ in range(6):  # scrapes answered by either worker: each adds up both
        text = scrape(base)
        assert value(text, "streamrec_requests_total", route=ROUTE) == start + 300
    assert value(text, "streamrec_requests_total", route=ROUTE, source="popular") >= sources.count("popular")
    assert value(text, "streamrec_request_duration_seconds_count", route=ROUTE) >= 300
    # What is not a route is one series, whatever the path.
    httpx.get(f"{base}/no/such/{time.time()}")
    time.sleep(1.5)
    text = scrape(base)
    assert value(text, "streamrec_requests_total", route="unmatched", status="404") >= 1
    assert "/no/such" not in text
    # Per worker: the model each serves; the live set's size and age.
    assert len(re.findall(r"^streamrec_model_created_timestamp_seconds\{pid=", text, re.M)) == 2
    assert value(text, "streamrec_model_users") > 0 and value(text, "streamrec_model_streamers") == 12
    assert value(text, "streamrec_live_streamers") == 2
    assert 0 <= value(text, "streamrec_live_age_seconds") < 600

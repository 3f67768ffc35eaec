"""The event loop against real servers: a batch acknowledged by one worker changes the next request
on every worker within a second, survives kill -9 of the whole service, and is taken into the
model by `als_fit.py --update --events`, which trims the log only after the model is in place;
replaying a log gives the same model, and a crash before the trim counts nothing twice."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from streamrec.events.log import FileLog, read_all
from streamrec.model.model_file import load_model
from tests.helpers import GROUP_B
from tests.server.helpers import children, clean_env, metric_value, run_cli, start_server, stop_server

INGEST = "ingest-token-for-the-tests"


def batch(*sessions) -> dict:
    return {
        "sessions": [
            {"uid": u, "session_id": 9, "streamer_name": s, "time_start": a, "time_end": b} for u, s, a, b in sessions
        ]
    }


def names(base: str, uid: str, **params) -> tuple[str, list[str]]:
    with httpx.Client() as fresh:  # a new connection: any worker may answer it
        body = fresh.get(f"{base}/recomendations/user/{uid}", params={"k": 12, **params}).json()
    return body["source"], [i["streamer_name"] for i in body["recommendations"]]


@pytest.fixture
def folder(tmp_path, block_model_path) -> Path:
    (tmp_path / "models").mkdir()
    shutil.copy(block_model_path, tmp_path / "models" / "model.pkl")
    return tmp_path


def env(folder: Path) -> dict[str, str]:
    return {"INGEST_TOKEN": INGEST, "EVENTS_PATH": str(folder / "events"), "LOG_LEVEL": "INFO"}


def kill_all(proc) -> None:
    """kill -9 the service: its workers first (they would outlive the master), then the master."""
    for pid in children(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(10)


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_every_worker_serves_a_batch_within_a_second_and_after_kill_9(folder):
    model = folder / "models" / "model.pkl"
    t = load_model(model).time_max
    proc, base = start_server(model, "--workers", "2", **env(folder))
    try:
        before = names(base, "1")[1]
        assert before.index(GROUP_B[0]) > 3
        sent = batch(
            *[("1", GROUP_B[0], t + i, t + i + 1) for i in range(0, 10, 2)], ("newcomer", GROUP_B[1], t, t + 2)
        )
        r = httpx.post(f"{base}/events", json=sent, headers={"Authorization": f"Bearer {INGEST}"})
        acknowledged = time.monotonic()
        assert r.status_code == 202 and r.json()["accepted"] == 6
        # one second after the 202, requests on new connections, spread over both workers: every
        # one of them is ranked with the batch
        time.sleep(max(1.0 - (time.monotonic() - acknowledged), 0))
        seen: dict[int, set] = {}
        for _ in range(40):
            with httpx.Client() as connection:  # one connection: one worker answers both
                pid = connection.get(f"{base}/health").json()["worker_pid"]
                mine = connection.get(f"{base}/recomendations/user/1", params={"k": 12}).json()["recommendations"]
                new = connection.get(f"{base}/recomendations/user/newcomer").json()["source"]
            seen.setdefault(pid, set()).add(([i["streamer_name"] for i in mine].index(GROUP_B[0]), new))
        assert len(seen) == 2, "the requests did not reach both workers"
        assert all(answers == {(3, "recent")} for answers in seen.values()), seen
        wait_for(
            lambda: metric_value(httpx.get(f"{base}/metrics").text, "streamrec_events_pending_sessions") == 6,
            3,
            "pending sessions not counted",
        )
    finally:
        kill_all(proc)
    # kill -9 of every process just after the 202: the batch is on disk, and served after a restart
    assert len([s for c in read_all(FileLog(folder / "events"), None) for _, s in c.sessions]) == 6
    proc, base = start_server(model, "--workers", "2", **env(folder))
    try:
        wait_for(lambda: names(base, "1")[1].index(GROUP_B[0]) == 3, 2.0, "not served after the restart")
        assert all(names(base, "newcomer")[0] == "recent" for _ in range(10))
    finally:
        stop_server(proc)


def test_the_update_takes_the_log_in_and_trims_it_after(folder):
    model = folder / "models" / "model.pkl"
    t = load_model(model).time_max
    proc, base = start_server(model, **env(folder))
    try:
        sent = batch(
            *[("1", GROUP_B[0], t + i, t + i + 1) for i in range(0, 10, 2)], ("newcomer", GROUP_B[1], t, t + 2)
        )
        assert httpx.post(f"{base}/events", json=sent, headers={"Authorization": f"Bearer {INGEST}"}).status_code == 202
        result = run_cli("als_fit.py", "--update", "--events", "--model", str(model), env=clean_env(**env(folder)))
        assert result.returncode == 0, result.stderr
        assert "6 sessions up to position" in result.stdout and "event log trimmed" in result.stdout
        updated = load_model(model)
        assert updated.metadata["events"]["through"] == FileLog(folder / "events").end()
        assert updated.users.get("newcomer") is not None
        assert [c for c in read_all(FileLog(folder / "events"), None)] == []  # trimmed
        # the server takes the new model up; the viewer keeps the change, now from the model
        wait_for(
            lambda: httpx.get(f"{base}/health").json()["created_at"] == updated.metadata["created_at"],
            10,
            "the updated model was not taken up",
        )
        assert names(base, "1")[1].index(GROUP_B[0]) <= 3  # the model's ALS now knows it too
        assert names(base, "newcomer")[0] == "personal"
        wait_for(
            lambda: metric_value(httpx.get(f"{base}/metrics").text, "streamrec_events_pending_sessions") == 0,
            3,
            "sessions still pending after the update",
        )
        # events after the update are read on from the model's position
        r = httpx.post(
            f"{base}/events",
            json=batch(("1", GROUP_B[3], t + 20, t + 21)),
            headers={"Authorization": f"Bearer {INGEST}"},
        )
        assert r.status_code == 202
    finally:
        stop_server(proc)


def test_replaying_a_log_gives_the_same_model_and_a_crash_before_the_trim_counts_nothing_twice(folder, tmp_path):
    model = folder / "models" / "model.pkl"
    t = load_model(model).time_max
    log = FileLog(folder / "events")
    for day in range(3):
        log.append([(str(u), GROUP_B[u % 6], t + day * 10 + u % 7, t + day * 10 + u % 7 + 2) for u in range(1, 40)])
        log.append([(f"new{day}", GROUP_B[day], t + day * 10, t + day * 10 + 1)])
    saved_log, saved_model = tmp_path / "log-copy", tmp_path / "model-copy.pkl"
    shutil.copytree(folder / "events", saved_log)
    shutil.copy(model, saved_model)

    def run_update(events: Path, path: Path):
        result = run_cli(
            "als_fit.py", "--update", "--events", "--model", str(path), env=clean_env(**env(events.parent))
        )
        assert result.returncode == 0, result.stderr
        return result

    run_update(folder / "events", model)
    first = load_model(model)
    # a replay: the same model file and the same log, elsewhere
    replay = tmp_path / "replay"
    (replay / "models").mkdir(parents=True)
    shutil.copytree(saved_log, replay / "events")
    shutil.copy(saved_model, replay / "models" / "model.pkl")
    run_update(replay / "events", replay / "models" / "model.pkl")
    second = load_model(replay / "models" / "model.pkl")
    for a, b in (
        (first.count.data, second.count.data),
        (first.als.user_factors, second.als.user_factors),
        (first.als.item_factors, second.als.item_factors),
        (first.lists["all"][0], second.lists["all"][0]),
        (first.lists["new"][1], second.lists["new"][1]),
    ):
        assert np.array_equal(a, b)
    # a crash between writing the model and trimming the log: the log is still whole
    shutil.rmtree(folder / "events")
    shutil.copytree(saved_log, folder / "events")
    before = model.read_bytes()
    again = run_update(folder / "events", model)
    assert "no sessions in the event log" in again.stdout
    assert model.read_bytes() == before  # nothing counted twice
    assert load_model(model).count.sum() == first.count.sum()

"""Crafted model files against the real server: at startup one line and exit 2; put in place of
the served file, one log line per worker and per file version, the old model serving throughout,
a 409 from POST /admin/reload, never a half-swapped state or a reload every second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.server.helpers import free_port, run_cli, start_server, stop_server

TOKEN = "crafted-model-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def crafted(data: bytes, edit) -> bytes:
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16 : 16 + length])
    first = min(spec["offset"] for spec in header["arrays"].values())
    text = edit(json.dumps(header)).encode()
    return data[:8] + len(text).to_bytes(8, "little") + text.ljust(first - 16, b" ") + data[first:]


CASES = {
    "created_at is a number": (lambda t: t.replace('"created_at": "', '"created_at": 5, "_": "', 1), "created_at"),
    "metadata is a list": (lambda t: t.replace('"metadata": {', '"metadata": [1, 2], "_": {', 1), "metadata"),
    "a shape of Infinity": (lambda t: t.replace('"shape": [60, 2]', '"shape": [Infinity]', 1), "Infinity"),
    "indices over another array": (None, "arrays overlap or are misaligned"),
}


def make(case: str, data: bytes) -> bytes:
    edit, _ = CASES[case]
    if edit is not None:
        return crafted(data, edit)
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16 : 16 + length])
    header["arrays"]["history.indices"]["offset"] = header["arrays"]["history.count"]["offset"]
    return crafted(data, lambda _: json.dumps(header))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_model_stops_startup_with_one_line(case, block_model_path, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(make(case, block_model_path.read_bytes()))
    result = run_cli("platform.py", "--model", str(path), "--port", str(free_port()), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {path} ")
    assert CASES[case][1] in result.stderr and "Traceback" not in result.stderr


def workers_answering(base: str, want: int = 2, timeout: float = 30) -> dict[int, dict]:
    """/health of each worker (fresh connections, several at once, until `want` answered)."""
    seen: dict[int, dict] = {}

    def ask(_):
        with httpx.Client(base_url=base, timeout=10) as client:
            return client.get("/health").json()

    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < want and time.monotonic() < deadline:
            seen.update((h["worker_pid"], h) for h in pool.map(ask, range(16)))
    assert len(seen) >= want, seen
    return seen


def test_a_crafted_model_in_place_of_the_served_one_is_one_line_and_a_409(block_model_path, tmp_path):
    path = tmp_path / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, "--workers", "2", ADMIN_TOKEN=TOKEN)
    try:
        workers_answering(base)  # both started (one still starting would load the crafted file)
        created = httpx.get(f"{base}/health").json()["created_at"]
        for i, case in enumerate(["created_at is a number", "indices over another array"]):
            bad = tmp_path / f"bad{i}.pkl"
            bad.write_bytes(make(case, block_model_path.read_bytes()))
            bad.replace(path)
            deadline = time.monotonic() + 3.5  # three or more looks at the file by each worker
            while time.monotonic() < deadline:
                with httpx.Client(base_url=base) as client:  # a fresh connection: either worker
                    health = client.get("/health")
                    assert health.status_code == 200 and health.json()["created_at"] == created
                    assert client.get("/recomendations/user/1").json()["source"] == "personal"
                time.sleep(0.1)
            r = httpx.post(f"{base}/admin/reload", headers=AUTH, timeout=30)
            assert r.status_code == 409 and f"still serving the model created at {created}" in r.json()["detail"]
            assert CASES[case][1] in r.json()["detail"]
    finally:
        log = stop_server(proc)
    lines = [line for line in log.splitlines() if "model file replaced but not loaded" in line]
    assert len(lines) == 4, log  # two workers, two bad versions of the file: once each
    assert "Traceback" not in log


def test_a_worker_restarted_while_a_crafted_model_is_in_place_serves_the_last_good_one(block_model_path, tmp_path):
    """uvicorn starts a new worker in place of one that died; one that cannot load the model file
    would make it stop every worker. It serves the last file that loaded instead."""
    path = tmp_path / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, "--workers", "2")
    try:
        before = workers_answering(base)
        created = next(iter(before.values()))["created_at"]
        assert (tmp_path / ".model.pkl.last-good").is_file()
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(make("created_at is a number", block_model_path.read_bytes()))
        bad.replace(path)
        os.kill(next(iter(before)), signal.SIGKILL)
        after: dict[int, dict] = {}
        deadline = time.monotonic() + 30
        while not (set(after) - set(before)) and time.monotonic() < deadline:
            after = workers_answering(base)
        assert set(after) - set(before), "no new worker answered"
        assert all(h["created_at"] == created for h in after.values())
        assert proc.poll() is None
    finally:
        log = stop_server(proc)
    assert "serving the last model file that loaded (created at" in log and "Traceback" not in log

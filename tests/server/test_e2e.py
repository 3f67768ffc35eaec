"""End to end: train with the CLI, start the real server process, ask it over HTTP."""

from __future__ import annotations

import time

import httpx2 as httpx
import pytest

from tests.helpers import GROUP_A, GROUP_B
from tests.server.helpers import free_port, run_cli, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, block_csv):
    model = tmp_path_factory.mktemp("e2e") / "model.pkl"
    result = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(model), "--factors", "2")
    assert result.returncode == 0, result.stderr
    proc, base = start_server(model)
    yield base
    stop_server(proc)


def test_trained_groups_are_served(server):
    for uid, group in (("4", GROUP_A), ("50", GROUP_B)):
        body = httpx.get(f"{server}/recomendations/user/{uid}", params={"k": 3, "exclude_watched": "true"}).json()
        assert body["source"] == "personal"
        assert {i["streamer_name"] for i in body["recommendations"]} <= set(group)


def test_unknown_user_and_k_bounds(server):
    body = httpx.get(f"{server}/recomendations/user/stranger", params={"k": 2}).json()
    assert body["source"] == "popular" and len(body["recommendations"]) == 2
    assert httpx.get(f"{server}/recomendations/user/4", params={"k": 0}).status_code == 422
    assert httpx.get(f"{server}/recomendations/user/4", params={"k": 101}).status_code == 422
    assert len(httpx.get(f"{server}/recomendations/user/4", params={"k": 100}).json()["recommendations"]) == 12


def test_health_over_http(server):
    body = httpx.get(f"{server}/health").json()
    assert body["model_loaded"] is True and body["users"] == 60


def test_two_workers_serve(block_model_path):
    proc, base = start_server(block_model_path, "--workers", "2")
    try:
        bodies = [httpx.get(f"{base}/recomendations/user/1").json() for _ in range(6)]
        assert all(b["source"] == "personal" for b in bodies)
    finally:
        stop_server(proc)


def test_missing_model_is_one_clear_line(tmp_path):
    missing = tmp_path / "nothing.pkl"
    result = run_cli("platform.py", "--model", str(missing), "--port", str(free_port()), timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"error: no model file at {missing}; train one with: python als_fit.py\n"


def test_sighup_rolls_a_new_model_out_to_every_worker(block_csv, tmp_path):
    import os
    import signal

    path = tmp_path / "model.pkl"
    assert run_cli("als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "2").returncode == 0
    proc, base = start_server(path, "--workers", "2")
    try:
        before = httpx.get(f"{base}/health").json()["created_at"]
        time.sleep(1.1)  # created_at has one-second resolution
        retrained = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "2")
        assert retrained.returncode == 0
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {httpx.get(f"{base}/health").json()["created_at"] for _ in range(20)}
            if seen and before not in seen:
                break
            time.sleep(0.5)
        assert before not in seen and len(seen) == 1  # every worker answers from the new model
    finally:
        stop_server(proc)

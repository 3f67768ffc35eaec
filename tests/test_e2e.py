"""End to end: train with the CLI, start the real server process, ask it over HTTP."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from conftest import GROUP_A, GROUP_B, free_port, run_cli, start_server, stop_server


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

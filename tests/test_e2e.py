"""End to end: train with the CLI, start the real server process, ask it over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx2 as httpx
import pytest

from conftest import GROUP_A, GROUP_B, ROOT, clean_env, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "platform.py", "--port", str(port), "--model", str(model_path), *args],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become ready in 60 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory, block_csv):
    model = tmp_path_factory.mktemp("e2e") / "model.pkl"
    result = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(model), "--factors", "2")
    assert result.returncode == 0, result.stderr
    proc, base = start_server(model)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


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
        proc.terminate()
        proc.wait(timeout=30)


def test_missing_model_is_one_clear_line(tmp_path):
    missing = tmp_path / "nothing.pkl"
    result = run_cli("platform.py", "--model", str(missing), "--port", str(free_port()), timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"error: no model file at {missing}; train one with: python als_fit.py\n"

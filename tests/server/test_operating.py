"""What an operator meets, against the real server process: HEAD on every GET route, the headers
every answer carries, docs served offline, bad settings and a taken port as one line and exit 2,
and /metrics showing only live workers after one is killed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.server.helpers import children, clean_env, free_port, metric_value, run_cli, start_server, stop_server

TOKEN = "operating-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GETS = [
    "/recomendations/user/1",
    "/recommendations/user/1",
    "/streamers/alpha0/similar",
    "/live",
    "/health",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
]


@pytest.fixture(scope="module")
def server(block_model_path, tmp_path_factory):
    model = tmp_path_factory.mktemp("operating") / "model.pkl"
    shutil.copy(block_model_path, model)
    proc, base = start_server(model, ADMIN_TOKEN=TOKEN)
    yield base
    stop_server(proc)


@pytest.mark.parametrize("path", GETS)
def test_head_answers_wherever_get_does_with_no_body(server, path):
    get = httpx.get(f"{server}{path}")
    head = httpx.head(f"{server}{path}")
    assert get.status_code == 200 and head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("path", [*GETS, "/no/such/route", "/recomendations/user/1?k=0"])
def test_every_answer_says_nosniff_and_names_no_server(server, path):
    r = httpx.get(f"{server}{path}")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "server" not in r.headers


def test_admin_answers_are_not_stored(server):
    for r in (
        httpx.put(f"{server}/live", json={"streamers": ["alpha0"]}, headers=AUTH),
        httpx.post(f"{server}/admin/reload", headers=AUTH, timeout=30),
        httpx.post(f"{server}/admin/reload"),  # refused: still not to be stored
    ):
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in httpx.get(f"{server}/recomendations/user/1").headers


def test_a_request_target_past_16_kib_is_414(server):
    r = httpx.get(f"{server}/recomendations/user/1", params={"recent": "a," * 9000})
    assert r.status_code == 414 and "expected at most 16,384 bytes" in r.json()["detail"]
    assert httpx.get(f"{server}/recomendations/user/{'x' * 5000}").status_code == 200


def test_docs_name_no_other_host_and_their_scripts_are_served_here(server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{server}{page}").text
        hosts = re.findall(r"(?:src|href)=[\"']([^\"']+)", html)
        assert hosts, html
        assert all(h.startswith("/") and not h.startswith("//") for h in hosts), hosts
        assert "http" not in html.replace("http-equiv", "")
        for asset in hosts:
            r = httpx.get(f"{server}{asset}")
            assert r.status_code == 200 and len(r.content) > 1000, asset


def test_docs_can_be_switched_off(block_model_path):
    proc, base = start_server(block_model_path, DOCS="false")
    try:
        assert httpx.get(f"{base}/docs").status_code == 404
        assert httpx.get(f"{base}/redoc").status_code == 404
        assert httpx.get(f"{base}/openapi.json").status_code == 200
    finally:
        stop_server(proc)


def one_line_exit_2(block_model_path, *args, **env) -> str:
    result = run_cli("platform.py", "--model", str(block_model_path), *args, env=clean_env(**env), timeout=60)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "startup complete" not in result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "abc"}, "setting PORT: Input should be a valid integer"),
        ({"PORT": "70000"}, "setting PORT: Input should be less than or equal to 65535"),
        ({"WORKERS": "0"}, "setting WORKERS: Input should be greater than or equal to 1"),
        ({"MAX_BODY_BYTES": "-5"}, "setting MAX_BODY_BYTES"),
        ({"LOG_LEVEL": "LOUD"}, "setting LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ({"METRICS": "perhaps"}, "setting METRICS: Input should be a valid boolean"),
        ({"ADMIN_TOKEN": "short"}, "setting ADMIN_TOKEN: expected at least 16 characters"),
        ({"PROMETHEUS_MULTIPROC_DIR": "/no/such/dir"}, "PROMETHEUS_MULTIPROC_DIR=/no/such/dir: expected an existing"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(block_model_path, env, expected):
    assert expected in one_line_exit_2(block_model_path, "--port", str(free_port()), **env)


def test_uvicorn_streamrec_serve_app_with_a_bad_setting_is_one_line_too():
    result = run_cli("-c", "from streamrec.serve.app import app", env=clean_env(PORT="abc"), timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: setting PORT: Input should be a valid integer, unable to parse string as an integer; found 'abc'"
    )


def test_importing_the_app_with_no_metrics_directory_is_one_line_not_a_traceback():
    result = run_cli(
        "-c", "from streamrec.serve.app import app", env=clean_env(PROMETHEUS_MULTIPROC_DIR="/no/such/dir"), timeout=60
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: PROMETHEUS_MULTIPROC_DIR=/no/such/dir: expected an existing directory")


def test_training_is_not_stopped_by_a_short_admin_token(block_csv, tmp_path):
    model = tmp_path / "model.pkl"
    result = run_cli(
        "als_fit.py", "--data", str(block_csv), "--model", str(model), "--factors", "2", "--iterations", "1",
        env=clean_env(ADMIN_TOKEN="short"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr and model.exists()


def test_a_token_of_spaces_leaves_the_admin_routes_off(block_model_path):
    proc, base = start_server(block_model_path, ADMIN_TOKEN="   ")
    try:
        r = httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer anything-at-all-here"})
        assert r.status_code == 404 and "ADMIN_TOKEN" in r.json()["detail"]
    finally:
        stop_server(proc)


def test_a_port_in_use_is_said_first_in_one_line(block_model_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_line_exit_2(block_model_path, "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in message


def workers_of(pid: int) -> list[int]:
    """The uvicorn workers among a server's children (not multiprocessing's resource tracker)."""
    return [p for p in children(pid) if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_killed_workers_gauges_leave_the_scrape(block_model_path, tmp_path):
    model = tmp_path / "model.pkl"
    shutil.copy(block_model_path, model)
    proc, base = start_server(model, "--workers", "2", ADMIN_TOKEN=TOKEN)
    try:
        assert httpx.put(f"{base}/live", json={"streamers": ["alpha0"]}, headers=AUTH).status_code == 200
        workers = workers_of(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the supervisor starts another in its place
            now = [p for p in workers_of(proc.pid) if p != workers[0]]
            if len(now) == 2:
                break
            time.sleep(0.2)
        assert len(now) == 2, now

        def pids_in_scrape(_):
            with httpx.Client(base_url=base, timeout=10) as client:
                text = client.get("/metrics").text
            return set(re.findall(r'^streamrec_model_created_timestamp_seconds\{pid="(\d+)"\}', text, re.M)), text

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(pids_in_scrape, range(8)))
            # ...and the new worker has taken up the live set (until then its gauge reads 0)
            if all(pids == {str(p) for p in now} and "streamrec_live_age_seconds " in t for pids, t in answers):
                break
            time.sleep(0.5)
        for pids, text in answers:  # whichever worker answers the scrape
            assert pids == {str(p) for p in now}
            assert re.search(r"^streamrec_live_age_seconds \S+$", text, re.M), text
            assert metric_value(text, "streamrec_live_age_seconds") < 30  # not the dead worker's old set
    finally:
        stop_server(proc)

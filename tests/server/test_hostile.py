"""Hostile model files, odd URLs and admin reloads, against the real server process."""

from __future__ import annotations

import http.client
import json
import pickle
import shutil
import socket
import threading
import time
from urllib.parse import quote, urlsplit

import httpx2 as httpx
import pytest

from streamrec.model.model_file import FORMAT, FORMAT_VERSION
from tests.helpers import Exploit
from tests.server.helpers import free_port, run_cli, start_server, stop_server

TOKEN = "s3cret-admin-token"


# --- model files ------------------------------------------------------------------------------


def model_files(tmp_path, block_model_path):
    real = block_model_path.read_bytes()
    length = int.from_bytes(real[8:16], "little")
    header = json.loads(real[16 : 16 + length])
    exploit = pickle.dumps(Exploit(tmp_path / "pwned"))
    other = json.dumps({**header, "format_version": 0}).encode()
    first = min(spec["offset"] for spec in header["arrays"].values())
    return {
        "tampered": real[:16] + exploit.ljust(length) + real[16 + length :],
        "old pickle": pickle.dumps({"format": FORMAT, "format_version": 3, "als": Exploit(tmp_path / "pwned")}),
        "truncated": real[: len(real) * 2 // 3],
        "not a model": b"PK\x03\x04 this is a zip file, not a model",
        "another format version": real[:8]
        + len(other).to_bytes(8, "little")
        + other.ljust(first - 16, b"\0")
        + real[first:],
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "is truncated or not a model file (unreadable header"),
        ("old pickle", "is not a model file of this service"),
        ("truncated", "is truncated or not a model file (the header says"),
        ("not a model", "is not a model file of this service"),
        ("another format version", f"has model format version 0, this service reads version {FORMAT_VERSION}"),
    ],
)
def test_bad_model_file_stops_startup_with_one_line(case, message, tmp_path, block_model_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(model_files(tmp_path, block_model_path)[case])
    result = run_cli("platform.py", "--model", str(path), "--port", str(free_port()), timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path} ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "pwned").exists()  # nothing from the file ran


# --- odd URLs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(block_model_path, tmp_path_factory):
    # A private copy, so reload tests can replace it without touching the shared fixture.
    path = tmp_path_factory.mktemp("served") / "model.pkl"
    shutil.copy(block_model_path, path)
    proc, base = start_server(path, ADMIN_TOKEN=TOKEN)
    yield base, path
    stop_server(proc)


def raw_get(base: str, raw_path: str) -> tuple[int, dict]:
    """Send the request line exactly as given (clients normalise `..` and escape bytes)."""
    host = urlsplit(base)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "user_id",
    [
        "ストリーマー好き",
        "🎮" * 50,
        "x" * 5000,
        "a/b/c",
        "..",
        "../../etc/passwd",
        "with spaces",
        "nul\x00byte",
        "%",
        "?k=1",
        " 42 ",
    ],
)
def test_any_user_id_the_url_can_carry_gets_a_list(server, user_id):
    base, _ = server
    status, body = raw_get(base, "/recomendations/user/" + quote(user_id, safe=""))
    assert status == 200
    assert body["user_id"] == user_id
    assert body["source"] == "popular" and len(body["recommendations"]) == 10


def test_unescaped_dot_segments_and_slashes(server):
    base, _ = server
    status, body = raw_get(base, "/recomendations/user/../1/./x")
    assert status in (200, 404)  # a path the router may not match, but never a 5xx
    status, body = raw_get(base, "/recomendations/user/1")
    assert (status, body["source"]) == (200, "personal")


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("k=1.5", "k"),
        ("k=", "k"),
        ("k=" + "9" * 40, "k"),
        ("k=-1", "k"),
        ("k=%00", "k"),
        ("exclude_watched=maybe", "exclude_watched"),
        ("exclude_watched=", "exclude_watched"),
    ],
)
def test_bad_query_values_are_422_naming_the_parameter(server, query, param):
    base, _ = server
    status, body = raw_get(base, f"/recomendations/user/1?{query}")
    assert status == 422
    assert body["detail"][0]["loc"] == ["query", param]
    assert body["detail"][0]["msg"]


def test_unknown_parameters_are_ignored(server):
    base, _ = server
    status, body = raw_get(base, "/recomendations/user/1?k=3&colour=blue&k2=9")
    assert status == 200 and len(body["recommendations"]) == 3


# --- admin reload -----------------------------------------------------------------------------


def test_admin_needs_the_token(server):
    base, _ = server
    assert httpx.post(f"{base}/admin/reload").status_code == 401
    assert httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert httpx.post(f"{base}/admin/reload", headers={"Authorization": f"Basic {TOKEN}"}).status_code in (401, 403)
    assert httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer ünïcode".encode()}).status_code == 403


def test_admin_is_off_without_a_token(block_model_path):
    proc, base = start_server(block_model_path)
    try:
        r = httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 404 and "ADMIN_TOKEN" in r.json()["detail"]
    finally:
        stop_server(proc)


def retrain(block_csv, path, seed: int) -> None:
    result = run_cli(
        "als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "2", "--random-state", str(seed)
    )
    assert result.returncode == 0, result.stderr


def test_reload_swaps_without_failing_requests_and_survives_a_broken_file(server, block_csv, tmp_path):
    base, path = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    stop = threading.Event()
    statuses: list[int] = []

    def hammer():
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get(f"/recomendations/user/{len(statuses) % 70}").status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        created = []
        for seed in (1, 2):
            time.sleep(1.0)  # created_at has one-second resolution
            retrain(block_csv, path, seed)
            r = httpx.post(f"{base}/admin/reload", headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            created.append(r.json()["created_at"])
        assert created[0] != created[1]
        assert httpx.get(f"{base}/health").json()["created_at"] == created[1]

        # A broken file put in place (by rename: the served model is mapped from the file it
        # replaces): the reload says why and the previous model keeps serving.
        broken = tmp_path / "broken.pkl"
        broken.write_bytes(b"garbage")
        broken.replace(path)
        r = httpx.post(f"{base}/admin/reload", headers=auth, timeout=30)
        assert r.status_code == 409
        detail = r.json()["detail"]
        assert "still serving the model created at" in detail and "not a model file of this service" in detail
        assert httpx.get(f"{base}/health").json()["created_at"] == created[1]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(statuses) > 100
    assert set(statuses) == {200}


# --- bodies -----------------------------------------------------------------------------------


def send_head(base: str, head: str, body: bytes = b"") -> tuple[int, dict, float]:
    """Send a request head and the first bytes of a body, never the rest; (status, JSON body,
    seconds to the answer). A server that waited for the whole body would time out here."""
    host = urlsplit(base)
    with socket.create_connection((host.hostname, host.port), timeout=10) as sock:
        start = time.perf_counter()
        sock.sendall(head.encode() + b"\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read()), time.perf_counter() - start


def test_admin_token_is_checked_before_the_body_is_read(server):
    base, _ = server
    head = "PUT /live HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 30000000\r\n"
    status, body, seconds = send_head(base, head, b'{"streamers": ["' + b"a" * 1000)
    assert (status, body["detail"]) == (401, "expected 'Authorization: Bearer <admin token>'")
    assert seconds < 5
    status, _, _ = send_head(base, head.replace("Host: x", "Host: x\r\nAuthorization: Bearer nope"), b"{")
    assert status == 403


def test_a_body_over_the_limit_is_413_unread(server):
    base, _ = server
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    head = f"PUT /live HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 200000000\r\n"
    status, body, seconds = send_head(base, head, b"{")
    assert status == 413 and seconds < 5
    assert "at most 33,554,432 bytes (MAX_BODY_BYTES)" in body["detail"] and "200,000,000" in body["detail"]

    # Sent in chunks without a length: read up to the limit, then refused.
    def chunks():
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    r = httpx.put(f"{base}/live", content=chunks(), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 413 and "sent without a length" in r.json()["detail"]
    assert httpx.get(f"{base}/health").status_code == 200


def test_a_live_set_of_100k_streamers_with_metadata_fits_the_default_limit():
    from streamrec.settings import Settings

    stream = {
        "streamer_name": "a_twenty_five_char_name_x",  # Twitch's longest login
        "category": "Grand Theft Auto V Enhanced Edition",
        "language": "en",
        "viewers": 123456,
    }
    body = json.dumps({"streamers": [stream] * 100_000}).encode()
    assert 10_000_000 < len(body) < Settings().max_body_bytes

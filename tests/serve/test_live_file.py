"""A live-set file that does not validate, and PUT /live values that would overflow, against the
real server: the service starts without the set, running workers log one line per bad file
version (not one a second), and the set they serve stays."""

from __future__ import annotations

import json
import shutil
import time

import httpx2 as httpx
import pytest

from streamrec.serve.live import LiveFileError, read_live
from tests.server.helpers import run_cli, start_server, stop_server

TOKEN = "live-file-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD = {
    "a category that is a number": {
        "since": "2026-01-01T00:00:00+00:00",
        "streamers": [{"streamer_name": "x", "category": 5}],
    },
    "viewers past any stream": {
        "since": "2026-01-01T00:00:00+00:00",
        "streamers": [{"streamer_name": "x", "viewers": 2**63}],
    },
    "no since": {"streamers": ["alpha0"]},
    "a since without a zone": {"since": "2026-01-01T00:00:00", "streamers": ["alpha0"]},
    "streamers not a list": {"since": "2026-01-01T00:00:00+00:00", "streamers": "alpha0"},
    "an empty name": {"since": "2026-01-01T00:00:00+00:00", "streamers": [""]},
    "a list, not an object": ["alpha0"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_live_file_that_does_not_validate_is_one_line(case, tmp_path):
    path = tmp_path / "live.json"
    path.write_text(json.dumps(BAD[case]))
    with pytest.raises(LiveFileError) as info:
        read_live(path, 1 << 20)
    assert str(info.value).startswith(f"{path}: not a live-set file: ") and "\n" not in str(info.value)


def test_a_live_file_over_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "live.json"
    path.write_text(json.dumps({"since": "2026-01-01T00:00:00+00:00", "streamers": ["a" * 100] * 100}))
    with pytest.raises(LiveFileError, match="expected a live-set file of at most 1,000 bytes; found 10,"):
        read_live(path, 1000)


def test_a_bad_live_file_at_startup_serves_without_a_live_set(block_model_path, tmp_path):
    model = tmp_path / "model.pkl"
    shutil.copy(block_model_path, model)
    model.with_suffix(".live.json").write_text(json.dumps(BAD["a category that is a number"]))
    proc, base = start_server(model, "--workers", "2")
    try:
        for _ in range(8):
            assert httpx.get(f"{base}/live").json()["live"] == 0
            assert httpx.get(f"{base}/recomendations/user/1").json()["source"] == "personal"
        time.sleep(2.5)  # two more checks of the file by each worker
    finally:
        log = stop_server(proc)
    lines = [line for line in log.splitlines() if "live set not taken up" in line]
    assert len(lines) == 2, log  # one per worker, at startup, and no more
    assert "Input should be a valid string" in lines[0] and "Traceback" not in log


def test_a_bad_live_file_while_serving_keeps_the_set_and_logs_once(block_model_path, tmp_path):
    model = tmp_path / "model.pkl"
    shutil.copy(block_model_path, model)
    proc, base = start_server(model, ADMIN_TOKEN=TOKEN)
    try:
        r = httpx.put(f"{base}/live", json={"streamers": ["alpha0", "bravo0"]}, headers=AUTH)
        assert r.status_code == 200
        since = r.json()["since"]
        broken = tmp_path / "broken.json"
        broken.write_text(json.dumps(BAD["viewers past any stream"]))
        broken.replace(model.with_suffix(".live.json"))
        time.sleep(3.5)  # three checks of the file
        status = httpx.get(f"{base}/live").json()
        assert (status["live"], status["since"]) == (2, since)
        assert httpx.get(f"{base}/recomendations/user/1", params={"live_only": "true"}).status_code == 200
    finally:
        log = stop_server(proc)
    lines = [line for line in log.splitlines() if "live set not taken up" in line]
    assert len(lines) == 1, log
    assert "still serving the set published at" in lines[0]
    assert "streamers[0].stream.viewers: Input should be less than or equal to 1000000000" in lines[0]
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"streamer_name": "alpha0", "viewers": 9223372036854775808}, "viewers"),
        ({"streamer_name": "alpha0", "viewers": -1}, "viewers"),
        ({"streamer_name": "alpha0", "category": 5}, "category"),
        ({"streamer_name": "alpha0", "language": "x" * 129}, "language"),
        ({"streamer_name": "x" * 1025}, "streamer_name"),
        ({"streamer_name": "\ud800"}, "streamer_name"),
    ],
)
def test_put_live_refuses_values_it_cannot_keep_with_a_422(item, field, block_model_path, tmp_path, live_server):
    base = live_server
    body = json.dumps({"streamers": ["alpha1", item]})
    r = httpx.put(f"{base}/live", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json()["detail"])
    assert httpx.get(f"{base}/health").status_code == 200


@pytest.fixture(scope="module")
def live_server(block_model_path, tmp_path_factory):
    model = tmp_path_factory.mktemp("live-file") / "model.pkl"
    shutil.copy(block_model_path, model)
    proc, base = start_server(model, ADMIN_TOKEN=TOKEN)
    yield base
    log = stop_server(proc)
    assert "Traceback" not in log, log


def test_run_cli_is_what_the_tests_use():  # the helper other tests here rely on
    assert run_cli("-c", "print(1)").stdout.strip() == "1"

"""One log format for every command and the server, uvicorn's own lines included; JSON lines on request."""

from __future__ import annotations

import json
import logging
import re

import httpx2 as httpx
import pytest

from streamrec.logs import JsonFormatter, log_config
from tests.server.helpers import clean_env, run_cli, start_server, stop_server

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \S")


def test_a_json_line_holds_time_level_logger_message_and_the_traceback():
    try:
        raise ValueError("bad file")
    except ValueError:
        record = logging.getLogger("service").makeRecord(
            "service", logging.ERROR, __file__, 1, "not loaded: %s", ("x.pkl",), exc_info=__import__("sys").exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "ERROR" and line["logger"] == "service" and line["message"] == "not loaded: x.pkl"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", line["time"])
    assert "ValueError: bad file" in line["exception"]


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="log format must be one of text, json; got 'xml'"):
        log_config("INFO", "xml")


def test_a_bad_log_format_setting_is_one_line_and_exit_2(block_model_path):
    result = run_cli("platform.py", "--model", str(block_model_path), env=clean_env(LOG_FORMAT="xml"), timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: setting LOG_FORMAT:"), result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_server_writes_one_format_uvicorns_lines_included(block_model_path, fmt):
    proc, base = start_server(block_model_path, LOG_FORMAT=fmt, LOG_LEVEL="INFO")
    try:
        assert httpx.get(f"{base}/recomendations/user/1").status_code == 200
    finally:
        output = stop_server(proc)
    lines = [line for line in output.splitlines() if line.strip()]
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        loggers = {r["logger"] for r in records}
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    else:
        assert all(TEXT_LINE.match(line) for line in lines), [line for line in lines if not TEXT_LINE.match(line)]
        loggers = {line.split()[2] for line in lines}
    # the service's own lines, uvicorn's startup lines and its access line, all in the one format
    assert {"service", "uvicorn.error", "uvicorn.access"} <= loggers, loggers


def test_the_trainer_writes_the_same_format(block_csv, tmp_path):
    args = ("als_fit.py", "--data", str(block_csv), "--model", str(tmp_path / "m.pkl"), "--factors", "2")
    result = run_cli(*args, env=clean_env(LOG_FORMAT="json"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"training", "als_fit"} <= {r["logger"] for r in records}
    text = run_cli(*args)
    lines = [line for line in text.stderr.splitlines() if line.strip()]
    assert lines and all(TEXT_LINE.match(line) for line in lines), text.stderr

"""Messy session files through the real trainer CLI: a clear one-line error (exit 2) or correct
handling, never a traceback, and never a touched model file."""

from __future__ import annotations

import gzip
import shutil

import pytest

from conftest import run_cli

HEADER = b"uid,session_id,streamer_name,time_start,time_end\n"
ROWS = b"".join(
    b"%d,%d,%s,%d,%d\n" % (u, u, s, t, t + 1) for u in range(1, 9) for s, t in ((b"aa", 1), (b"bb", 5), (b"cc", 9))
)

ERRORS = {
    "missing path": (None, "no such file or directory"),
    "directory": ("DIR", "found a directory"),
    "empty file": (b"", "found an empty file"),
    "header with no rows": (HEADER, "found a header with no rows"),
    "missing column": (b"uid,session_id,streamer_name,time_start\n1,1,a,1\n", "missing column(s) time_end"),
    "unknown header": (b"user,item,rating\n1,2,5\n", "expected a header with uid,session_id,streamer_name"),
    "binary garbage": (bytes(range(256)) * 20, "found binary data"),
    "undecodable bytes": (HEADER + b"1,1,caf\xe9,1,2\n", "found undecodable bytes"),
    "only blank ids": (HEADER + b",1,a,1,2\n2,1,,1,2\n", "expected rows with a uid and a streamer_name"),
    "times that do not parse": (HEADER + b"1,1,a,noon,later\n", "found none that parse"),
    "time_end before time_start everywhere": (HEADER + b"1,1,a,9,3\n", "no usable rows left"),
    "mixed time formats": (
        HEADER + b"1,1,a,1,2\n2,1,b,2024-05-01T10:00:00,2024-05-01T11:00:00\n",
        "expected one time format",
    ),
    "ragged row": (HEADER + b"1,1,a,1,2\n1,1,a,1,2,3\n", "expected 5 fields in line 3, saw 6"),
    "unterminated quote": (HEADER + b'1,1,"a,1,2\n', "expected well-formed CSV"),
    "truncated gzip": ("TRUNCATED_GZ", "expected a complete gzip stream"),
}


@pytest.fixture
def previous_model(block_model_path, tmp_path):
    path = tmp_path / "model.pkl"
    shutil.copy(block_model_path, path)
    return path


def materialise(tmp_path, content) -> str:
    path = tmp_path / "sessions.csv"
    if content is None:
        return str(path)
    if content == "DIR":
        path.mkdir()
    elif content == "TRUNCATED_GZ":
        data = gzip.compress(HEADER + ROWS * 2000)
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("case", list(ERRORS))
def test_unusable_input_is_one_line_exit_2_and_the_model_is_untouched(case, tmp_path, previous_model):
    content, message = ERRORS[case]
    data = materialise(tmp_path, content)
    before = previous_model.read_bytes()
    result = run_cli("als_fit.py", "--data", data, "--model", str(previous_model))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {data}: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert previous_model.read_bytes() == before


def train_ok(tmp_path, content: bytes, *extra: str) -> str:
    data = tmp_path / "sessions.csv"
    data.write_bytes(content)
    result = run_cli("als_fit.py", "--data", str(data), "--model", str(tmp_path / "m.pkl"), "--factors", "2", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bad_rows_are_dropped_and_counted_in_the_summary(tmp_path):
    bad = b",1,aa,1,2\n9,1,,1,2\n9,1,aa,x,2\n9,1,aa,5,4\n1,1,aa,1,2\n"
    out = train_ok(tmp_path, HEADER + ROWS + bad)
    assert (
        "dropped 5 rows: 1 blank uid; 1 blank streamer_name; 1 missing or unparseable time; "
        "1 time_end before time_start; 1 duplicate session" in out
    )


def test_names_with_commas_quotes_newlines_and_unicode_are_kept(tmp_path):
    odd = '1,1,"a, b",1,2\n2,1,"say ""hi""",1,2\n3,1,"two\nlines",1,2\n4,1,ストリーマー 🎮,1,2\n'.encode()
    train_ok(tmp_path, HEADER + ROWS + odd)
    from model_file import load_model

    names = set(load_model(tmp_path / "m.pkl").streamers.ids.tolist())
    assert {"a, b", 'say "hi"', "two\nlines", "ストリーマー 🎮"} <= names


def test_gzip_input_is_read_directly(tmp_path):
    data = tmp_path / "full_a.csv.gz"
    data.write_bytes(gzip.compress(ROWS.replace(b"aa", b"mithrain")))  # headerless, as published
    result = run_cli("als_fit.py", "--data", str(data), "--model", str(tmp_path / "m.pkl"), "--factors", "2")
    assert result.returncode == 0, result.stderr
    assert "8 users, 3 streamers" in result.stdout


def test_byte_order_mark_and_crlf_are_fine(tmp_path):
    out = train_ok(tmp_path, b"\xef\xbb\xbf" + (HEADER + ROWS).replace(b"\n", b"\r\n"))
    assert "8 users, 3 streamers" in out


def test_unwritable_model_path_fails_before_reading_data(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    result = run_cli("als_fit.py", "--data", str(tmp_path / "never-read.csv"), "--model", str(blocker / "m.pkl"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {blocker / 'm.pkl'}: cannot write the model there")
    assert "never-read" not in result.stderr  # the data was not even looked at

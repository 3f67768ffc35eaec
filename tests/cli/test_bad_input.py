"""Messy session files through the real trainer CLI: a clear one-line error (exit 2) or correct
handling, never a traceback, and never a touched model file."""

from __future__ import annotations

import gzip
import shutil

import pytest

from tests.helpers import ERRORS, HEADER, ROWS, materialise
from tests.server.helpers import run_cli


@pytest.fixture
def previous_model(block_model_path, tmp_path):
    path = tmp_path / "model.pkl"
    shutil.copy(block_model_path, path)
    return path


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
    from streamrec.model.model_file import load_model

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

"""Reading session files: both layouts, both time formats, and the rows that get dropped."""

from __future__ import annotations

import gzip
import re

import pytest

from streamrec.data.sessions import INTEGER, ISO, DataError, read_sessions

HEADER = "uid,session_id,streamer_name,time_start,time_end\n"


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_header_in_any_order_with_extra_columns(tmp_path):
    path = write(tmp_path, "time_end,extra,streamer_name,uid,time_start,session_id\n5,x,alice,42,3,9\n")
    s = read_sessions(path)
    assert s.layout == "header"
    row = s.frame.astype({"uid": str, "streamer_name": str}).to_dict("records")
    assert row == [{"uid": "42", "streamer_name": "alice", "time_start": 3, "time_end": 5}]


def test_headerless_twitch_layout(tmp_path):
    path = write(tmp_path, "1,33842865744,mithrain,154,156\n1,33846768288,alptv,166,169\n")
    s = read_sessions(path)
    assert s.layout.startswith("twitch")
    assert s.time_format == INTEGER
    assert s.frame["streamer_name"].tolist() == ["mithrain", "alptv"]
    assert s.frame["uid"].tolist() == ["1", "1"]  # ids are strings, even when they look like numbers


def test_iso_times_become_epoch_seconds(tmp_path):
    path = write(tmp_path, HEADER + "u1,1,alice,2024-05-01T10:00:00Z,2024-05-01T10:30:00Z\n")
    s = read_sessions(path)
    assert s.time_format == ISO
    assert s.frame["time_end"].iloc[0] - s.frame["time_start"].iloc[0] == 30 * 60


def test_gzip_is_read_whatever_the_name(tmp_path):
    path = tmp_path / "sessions.data"
    path.write_bytes(gzip.compress(b"1,1,alice,1,2\n2,2,bob,3,4\n"))
    assert read_sessions(path).rows_used == 2


def test_unusable_rows_are_dropped_and_counted(tmp_path):
    text = HEADER + "1,1,a,1,2\n,1,a,1,2\n2,1,,1,2\n3,1,b,5,4\n4,1,c,x,2\n1,1,a,1,2\n5,1,d,1,1\n"
    s = read_sessions(write(tmp_path, text))
    assert s.rows_read == 7
    assert s.rows_used == 2
    assert s.dropped == {
        "blank uid": 1,
        "blank streamer_name": 1,
        "missing or unparseable time": 1,
        "time_end before time_start": 1,
        "duplicate session": 1,
    }
    assert "dropped 5 rows" in s.drop_summary()


def test_quoted_names_with_commas_quotes_newlines_and_unicode(tmp_path):
    text = HEADER + '1,1,"a, b",1,2\n1,2,"say ""hi""",1,2\n1,3,"two\nlines",1,2\n1,4,ストリーマー,1,2\n'
    s = read_sessions(write(tmp_path, text))
    assert s.frame["streamer_name"].tolist() == ["a, b", 'say "hi"', "two\nlines", "ストリーマー"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        (HEADER, "header with no rows"),
        ("uid,session_id,streamer_name,time_start\n1,1,a,1\n", "missing column(s) time_end"),
        ("foo,bar\n1,2\n", "expected a header"),
        (HEADER + "1,1,a,1,2\n2,1,b,2024-01-01T00:00:00,2024-01-01T01:00:00\n", "expected one time format"),
        (HEADER + "1,1,a,x,y\n", "found none that parse"),
        (HEADER + "1,1,a,5,4\n", "no usable rows left"),
    ],
)
def test_unusable_files_raise_one_clear_line(tmp_path, text, message):
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_sessions(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_sessions(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="found a directory"):
        read_sessions(tmp_path)

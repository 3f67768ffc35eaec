"""A POST /events body: malformed items refuse the batch naming index and field; what the sessions
file's reader drops is dropped and counted by the same rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.data.sessions import INTEGER, ISO, clean_rows, read_sessions
from streamrec.events.batch import BatchInvalid, parse_batch


def body(*sessions) -> bytes:
    return json.dumps({"sessions": list(sessions)}).encode()


def item(uid="1", streamer="a", start=1, end=2, session=7) -> dict:
    return {"uid": uid, "session_id": session, "streamer_name": streamer, "time_start": start, "time_end": end}


def test_a_clean_batch_is_kept_whole():
    batch = parse_batch(body(item(), item(uid=2, streamer="b", start=3, end=9)), INTEGER, 100, 10)
    assert batch.rows() == [("1", "a", 1, 2), ("2", "b", 3, 9)]
    assert batch.received == 2 and batch.dropped == {}


@pytest.mark.parametrize(
    ("sessions", "loc", "words"),
    [
        ([item(), {"uid": "1"}], ["body", "sessions", 1, "session_id"], "Field required"),
        ([item(start="1")], ["body", "sessions", 0, "time_start"], "expected a whole number"),
        ([item(end=2.5)], ["body", "sessions", 0, "time_end"], "found a number with a fraction"),
        ([item(end=True)], ["body", "sessions", 0, "time_end"], "found a boolean"),
        ([item(streamer=5)], ["body", "sessions", 0, "streamer_name"], "expected text; found an integer"),
        ([item(uid=None)], ["body", "sessions", 0, "uid"], "found null"),
        ([item(uid="x" * 2000)], ["body", "sessions", 0, "uid"], "at most 1024 characters"),
        ([item(), "text"], ["body", "sessions", 1], "expected an object; found text"),
        ([item(end=500)], ["body", "sessions", 0, "time_end"], "no later than 100"),
    ],
)
def test_a_malformed_item_refuses_the_batch_naming_index_and_field(sessions, loc, words):
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(body(*sessions), INTEGER, 100, 10)
    error = caught.value.errors[0]
    assert error["loc"] == loc
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "found invalid JSON"),
        (b"[1, 2]", "found a list"),
        (b'{"events": []}', "with keys ['events']"),
        (b'{"sessions": 5}', "expected a list; found an integer"),
    ],
)
def test_a_body_of_another_shape_is_refused(raw, words):
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(raw, INTEGER, 100, 10)
    assert words in caught.value.errors[0]["msg"]


def test_a_batch_over_the_limit_is_refused():
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(body(*[item(start=i, end=i + 1) for i in range(11)]), INTEGER, 100, 10)
    assert "at most 10 sessions" in caught.value.errors[0]["msg"] and "found 11" in caught.value.errors[0]["msg"]


def test_errors_are_bounded_and_the_rest_counted():
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(body(*[{"uid": "1"} for _ in range(50)]), INTEGER, 100, 100)
    assert len(caught.value.errors) == 10 and caught.value.more > 0


def test_rows_the_file_reader_drops_are_dropped_and_counted_by_its_rules(tmp_path):
    sessions = [
        item(),
        item(),  # the same session twice
        item(uid="  "),  # blank uid
        item(streamer=""),  # blank streamer
        item(start=9, end=3),  # ends before it starts
        item(uid=" 2 ", streamer=" b ", start=4, end=6),  # spaces around ids are not part of them
    ]
    batch = parse_batch(body(*sessions), INTEGER, 100, 10)
    assert batch.rows() == [("1", "a", 1, 2), ("2", "b", 4, 6)]
    # The CSV reader, on the same rows, drops the same ones for the same reasons.
    path = tmp_path / "same.csv"
    pd.DataFrame(sessions).to_csv(path, index=False)
    from_file = read_sessions(path)
    assert batch.dropped == from_file.dropped
    assert len(from_file.frame) == len(batch)


def test_iso_times_are_kept_as_the_file_reader_keeps_them(tmp_path):
    sessions = [item(start="2024-05-01T10:00:00", end="2024-05-01T11:30:00"), item(start="noon", end="later")]
    batch = parse_batch(body(*sessions), ISO, 2_000_000_000, 10)
    path = tmp_path / "iso.csv"
    pd.DataFrame(sessions[:1]).to_csv(path, index=False)
    from_file = read_sessions(path)
    assert from_file.time_format == ISO
    assert np.array_equal(batch.start, from_file.frame["time_start"].to_numpy())
    assert np.array_equal(batch.end, from_file.frame["time_end"].to_numpy())
    assert batch.dropped == {"missing or unparseable time": 1}


def test_iso_model_refuses_integer_times_and_a_time_in_the_future():
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(body(item(start=1, end=2)), ISO, 2_000_000_000, 10)
    assert "expected an ISO-8601 time as text" in caught.value.errors[0]["msg"]
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(body(item(start="2099-01-01T00:00:00", end="2099-01-01T01:00:00")), ISO, 2_000_000_000, 10)
    assert caught.value.errors[0]["loc"][-1] == "time_end"


def test_an_empty_batch_is_fine():
    batch = parse_batch(body(), INTEGER, 100, 10)
    assert len(batch) == 0 and batch.received == 0


ROW = st.tuples(
    st.sampled_from(["1", " 1", "2 ", "", "  ", "x"]),
    st.sampled_from(["a", " a", "b", "", " "]),
    st.integers(-3, 6) | st.sampled_from([2**53 + 1, -(2**60)]),
    st.integers(-3, 6) | st.sampled_from([2**53 + 1]),
)


@given(rows=st.lists(ROW, max_size=40))
@settings(max_examples=300, deadline=None)
def test_a_batch_drops_what_the_file_reader_drops_for_the_same_reasons(rows):
    batch = parse_batch(body(*[item(u, s, a, b) for u, s, a, b in rows]), INTEGER, 10**18, 100)
    frame = pd.DataFrame(
        {
            "uid": pd.Series([r[0] for r in rows], dtype=object),
            "streamer_name": pd.Series([r[1] for r in rows], dtype=object),
            "time_start": np.array([r[2] for r in rows], dtype=np.int64),
            "time_end": np.array([r[3] for r in rows], dtype=np.int64),
        }
    )
    clean, _, dropped = clean_rows(frame, "test", empty_ok=True)
    assert batch.dropped == dropped
    assert batch.rows() == list(
        zip(
            clean["uid"].astype(str),
            clean["streamer_name"].astype(str),
            clean["time_start"].tolist(),
            clean["time_end"].tolist(),
            strict=True,
        )
    )

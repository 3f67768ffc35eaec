"""Small data with known answers, shared by the tests."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd

GROUP_A = [f"alpha{i}" for i in range(6)]
GROUP_B = [f"bravo{i}" for i in range(6)]


def block_sessions(n_users_per_group: int = 30, seed: int = 0) -> pd.DataFrame:
    """Two audiences that never mix: users 1..n watch only alpha*, users n+1..2n only bravo*.
    Each user watches 3 of their group's 6 streamers, several times, over 100 time steps, so
    the right discovery for a user is the other 3 streamers of their own group."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(2 * n_users_per_group):
        group = GROUP_A if u < n_users_per_group else GROUP_B
        watched = rng.choice(group, 3, replace=False)
        for t in sorted(rng.choice(100, 12, replace=False)):
            streamer = watched[t % 3]
            rows.append((u + 1, 1000 + t, streamer, int(t), int(t) + int(rng.integers(0, 3))))
    return pd.DataFrame(rows, columns=["uid", "session_id", "streamer_name", "time_start", "time_end"])


class Exploit:
    """Pickles to a payload that would create the file `target` when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


# Session files a trainer must refuse in one line: case -> (content, part of the message). None is a
# missing path, "DIR" a directory, "TRUNCATED_GZ" half a gzip stream (see `materialise`).
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


def answer_body(served, user_id: str, *args, **kwargs) -> bytes:
    """What the recommendations route answers, from a serving snapshot (`ServedModel.recommend`,
    then `ServedModel.response`, as the route calls them)."""
    source, rows, scores = served.recommend(user_id, *args, **kwargs)
    return served.response(user_id, source, rows, scores)

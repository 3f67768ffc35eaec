"""The file event log: positions only grow, a torn record is never read and is cut off by the next
writer, segments rotate and are trimmed whole, a viewer's sessions are deleted in place, and
writers in several processes never interleave."""

from __future__ import annotations

import multiprocessing
import os

from streamrec.events.log import FileLog, read_all


def sessions_of(log: FileLog, after=None) -> list:
    return [s for chunk in read_all(log, after) for _, s in chunk.sessions]


def test_records_come_back_in_order_with_growing_positions(tmp_path):
    log = FileLog(tmp_path / "events")
    first = log.append([("1", "a", 1, 2), ("2", "b", 3, 4)])
    second = log.append([("1", "c", 5, 6)])
    assert 0 < first < second == log.end()
    chunk = log.read(None)
    assert [p for p, _ in chunk.sessions] == [first, first, second]
    assert chunk.position == second
    assert [s for _, s in log.read(first).sessions] == [("1", "c", 5, 6)]
    assert log.read(second).position is None  # nothing after the end


def test_a_torn_record_is_never_read_and_is_cut_off_by_the_next_writer(tmp_path):
    log = FileLog(tmp_path)
    log.append([("1", "a", 1, 2)])
    segment = log.segments()[-1][1]
    complete = segment.read_bytes()
    with open(segment, "ab") as f:
        f.write(b'deadbeef {"at":1,"s":[["9","z",1,2]]')  # a crash mid-write: no newline
    assert sessions_of(log) == [("1", "a", 1, 2)]
    after = log.append([("2", "b", 3, 4)])
    data = segment.read_bytes()
    assert data.startswith(complete) and b'"9"' not in data  # the torn bytes were cut off first
    assert after == len(data) and data.count(b"\n") == 2
    assert sessions_of(log) == [("1", "a", 1, 2), ("2", "b", 3, 4)]


def test_a_damaged_record_is_skipped(tmp_path):
    log = FileLog(tmp_path)
    log.append([("1", "a", 1, 2)])
    log.append([("2", "b", 3, 4)])
    segment = log.segments()[-1][1]
    data = bytearray(segment.read_bytes())
    data[data.index(b'"1"') + 1] = ord("7")  # one flipped byte: its checksum fails
    segment.write_bytes(bytes(data))
    assert sessions_of(log) == [("2", "b", 3, 4)]


def test_segments_rotate_and_trim_deletes_whole_segments_only(tmp_path):
    log = FileLog(tmp_path, segment_bytes=200)
    positions = [log.append([(str(i), "streamer", i, i + 1)]) for i in range(12)]
    assert len(log.segments()) > 2
    assert sessions_of(log) == [(str(i), "streamer", i, i + 1) for i in range(12)]
    middle = positions[5]
    freed = log.trim(middle)
    assert freed > 0
    left = sessions_of(log)
    assert ("11", "streamer", 11, 12) in left and ("0", "streamer", 0, 1) not in left
    assert {s[0] for s in left} >= {str(i) for i in range(6, 12)}  # nothing after `through` is gone
    # Trimming everything keeps positions growing: the next record is after the last one.
    log.trim(positions[-1])
    assert sessions_of(log) == []
    assert log.append([("x", "y", 1, 2)]) > positions[-1]
    assert sessions_of(log, positions[-1]) == [("x", "y", 1, 2)]


def test_forget_deletes_a_viewers_sessions_in_place(tmp_path):
    log = FileLog(tmp_path)
    first = log.append([("1", "a", 1, 2), ("2", "b", 3, 4)])
    second = log.append([("1", "c", 5, 6)])
    size = log.size()
    assert log.forget("1") == 2
    chunk = log.read(None)
    assert [s for _, s in chunk.sessions] == [("2", "b", 3, 4)]
    assert [p for p, _ in chunk.sessions] == [first]  # positions did not move
    assert chunk.forget == [(chunk.position, "1")]  # every worker is told
    assert log.size() > size and b'"1","a"' not in log.segments()[-1][1].read_bytes()
    assert log.read(second).forget[0][1] == "1"


def _write_many(folder: str, worker: int) -> None:
    log = FileLog(folder, segment_bytes=4096)
    for i in range(40):
        log.append([(f"w{worker}", f"s{i}", i, i + 1)] * 3)


def test_writers_in_several_processes_never_interleave(tmp_path):
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = FileLog(tmp_path)
    got = sessions_of(log)
    assert len(got) == 4 * 40 * 3
    for w in range(4):
        mine = [s for s in got if s[0] == f"w{w}"]
        assert [s[1] for s in mine[::3]] == [f"s{i}" for i in range(40)]  # each writer's order kept
    assert all(size > 0 for size in (os.path.getsize(p) for _, p in log.segments()[:-1]))


def test_the_stream_holds_one_entry_a_batch_reads_1_2_0_entries_and_forget_moves_the_rest(tmp_path):
    """The store's stream (a real redis-server): a batch is one entry read back whole; entries
    written by 1.2.0 (one per session) are still read; a viewer's events deleted from an entry
    shared with others leave the others' sessions in one entry at the stream's end."""
    import asyncio

    import redis

    from streamrec.events.log import RedisLog, parse_stream_id
    from streamrec.serve.store import Store
    from tests.server.helpers import RedisServer

    server = RedisServer(tmp_path / "redis", durable=True).start()
    try:
        raw = redis.Redis.from_url(server.url)
        raw.xadd("streamrec:sessions", {"u": "old", "n": "a", "a": "1", "b": "2"})  # as 1.2.0 wrote

        async def write() -> tuple[str, int]:
            store = Store(server.url, "streamrec:")
            try:
                position = await store.append_sessions([("1", "a", 3, 4), ("2", "b", 5, 6), ("1", "c", 7, 8)])
                await store.append_sessions([("3", "d", 9, 10)])
                return position, await store.forget_sessions("1")
            finally:
                await store.close()

        first, deleted = asyncio.run(write())
        assert deleted == 2
        log = RedisLog(server.url, "streamrec:")
        chunk = log.read(None)
        log.close()
        sessions = [s for _, s in chunk.sessions]
        assert sessions == [("old", "a", 1, 2), ("3", "d", 9, 10), ("2", "b", 5, 6)]
        positions = [parse_stream_id(p) for p, _ in chunk.sessions]
        assert positions[-1] > parse_stream_id(first) and positions == sorted(positions)  # moved to the end
        assert chunk.forget == [(chunk.position, "1")]
        assert raw.xlen("streamrec:sessions") == 4  # the old entry, the second batch, the rest, the forget
        raw.close()
    finally:
        server.stop()

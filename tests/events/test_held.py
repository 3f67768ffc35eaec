"""What a worker holds per viewer: bounded, counted once, dropped once a model has it."""

from __future__ import annotations

from streamrec.events.held import Held, position_key
from streamrec.events.log import Chunk


def chunk(*rows, forget=()) -> Chunk:
    sessions = [(p, s) for p, s in rows]
    positions = [p for p, _ in rows] + [p for p, _ in forget]
    return Chunk(sessions, list(forget), max(positions) if positions else None)


def test_sessions_are_held_in_order_and_a_repeat_counts_once():
    held = Held()
    held.take(chunk((10, ("1", "a", 1, 2)), (10, ("1", "a", 1, 2)), (20, ("1", "b", 3, 4))))
    assert held.sessions("1") == [("a", 1, 2), ("b", 3, 4)]
    assert held.sessions("2") is None
    assert held.position == 20 and held.newest_time == 4


def test_only_the_last_sessions_of_a_viewer_are_held():
    held = Held(per_viewer=3)
    held.take(chunk(*[(i, ("1", f"s{i}", 100 - i, 101 - i)) for i in range(1, 6)]))
    # by start: the three latest are those of positions 1, 2 and 3
    assert sorted(held.sessions("1")) == [("s1", 99, 100), ("s2", 98, 99), ("s3", 97, 98)]


def test_the_longest_quiet_viewer_goes_first_past_the_cap():
    held = Held(max_viewers=2)
    held.take(chunk((1, ("1", "a", 1, 2))), now=0)
    held.take(chunk((2, ("2", "a", 1, 2))), now=1)
    held.take(chunk((3, ("1", "b", 3, 4))), now=2)  # viewer 1 is active again
    held.take(chunk((4, ("3", "a", 1, 2))), now=3)
    assert held.sessions("2", now=3) is None and held.sessions("1", now=3) and held.sessions("3", now=3)


def test_viewers_are_dropped_after_the_hold_time():
    held = Held(hold_seconds=10)
    held.take(chunk((1, ("1", "a", 1, 2))), now=0)
    held.take(chunk((2, ("2", "a", 1, 2))), now=8)
    assert held.expire(now=15) == 1
    assert held.sessions("1", now=15) is None and held.sessions("2", now=15) is not None
    assert held.sessions("2", now=19) is None


def test_what_a_model_has_taken_in_is_no_longer_held_or_pending():
    held = Held()
    held.take(chunk((10, ("1", "a", 1, 2)), (20, ("1", "b", 3, 4))))
    assert held.pending == 2
    held.taken_in(10)
    assert held.sessions("1") == [("b", 3, 4)] and held.pending == 1
    held.taken_in(20)
    assert held.sessions("1") is None and held.pending == 0
    held.take(chunk((5, ("2", "a", 1, 2))))  # read again after a restart: the model has it
    assert held.sessions("2") is None


def test_a_forget_record_drops_what_came_before_it_only():
    held = Held()
    held.take(chunk((1, ("1", "a", 1, 2)), (3, ("1", "b", 3, 4)), forget=[(2, "1")]))
    assert held.sessions("1") == [("b", 3, 4)]


def test_unknown_streamers_are_not_held_but_are_counted():
    held = Held()
    held.take(chunk((1, ("1", "ghost", 1, 2)), (2, ("1", "a", 3, 4))), known=lambda name: name == "a")
    assert held.sessions("1") == [("a", 3, 4)] and held.pending == 2 and held.names == ["a"]


def test_a_batch_written_here_does_not_move_the_read_position():
    held = Held()
    held.take(chunk((50, ("1", "a", 1, 2))), advance=False)
    assert held.position is None and held.pending == 0 and held.sessions("1") == [("a", 1, 2)]
    held.take(chunk((40, ("2", "a", 1, 2)), (50, ("1", "a", 1, 2))))  # then read from the log
    assert held.position == 50 and held.pending == 2 and held.sessions("1") == [("a", 1, 2)]


def test_stream_ids_order_as_positions():
    assert position_key("1700000000000-0") < position_key("1700000000000-1") < position_key("1700000000001-0")
    assert position_key(None) == -1 and position_key("garbage") == -1 and position_key(12) == 12

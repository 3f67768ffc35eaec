"""Progress on long steps: rate-limited lines in a log, sub-steps named as such."""

from __future__ import annotations

import logging

from streamrec import progress
from streamrec.progress import Timer


def test_log_lines_are_rate_limited(monkeypatch, caplog):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    caplog.set_level(logging.INFO, logger="training")
    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
    with progress.progress("ranked lists", total=1000, unit="users") as bar:
        for _ in range(10):
            bar.update(100)
    assert not caplog.records  # a fast step says nothing more than its timing

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with progress.progress("ranked lists", total=1000, unit="users") as bar:
        for _ in range(10):
            bar.update(100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("ranked lists: 100/1,000 users (10%)") and "s left" in lines[0]
    assert len(lines) == 9  # none at 100%: the step's own timing line says it is done


def test_als_callback_logs_iterations(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    caplog.set_level(logging.INFO, logger="training")
    callback = progress.als_callback("als", 3)
    for i in range(3):
        callback(i, 0.1, None)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["als: 1/3 iterations", "als: 2/3 iterations"]


def test_sub_steps_are_logged_under_their_parent(caplog):
    caplog.set_level(logging.INFO, logger="training")
    timer = Timer()
    with timer("validation"):
        sub = timer.sub("validation")
        with sub("als"):
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("validation / als") and messages[1].startswith("validation ")
    assert set(timer.steps) == {"validation"} and set(sub.steps) == {"als"}  # kept apart

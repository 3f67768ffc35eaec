"""`python als_fit.py --update`: new sessions merged into a model file, as a user runs it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from streamrec.data import demo as demo_data
from streamrec.data.sessions import START, read_sessions
from streamrec.model.model_file import load_model, save_model
from streamrec.model.ranking import ranked_lists
from streamrec.model.recommender import LIST_LENGTH
from streamrec.model.scoring import entry_scores
from streamrec.serve.app import create_app
from streamrec.settings import Settings
from streamrec.train.update import update
from tests.server.helpers import run_cli


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A demo log split by time: the model's part, the newest 10% after it, and all of it."""
    tmp = tmp_path_factory.mktemp("update")
    frame = demo_data.generate(n_users=600, seed=7)
    cut = int(frame[START].quantile(0.9))
    # After the cut, also a viewer and a streamer the model has never seen.
    known = frame.iloc[0]
    arrivals = pd.DataFrame(
        {
            "uid": ["newcomer"] * 3 + [known["uid"]],
            "session_id": [900_001, 900_002, 900_003, 900_004],
            "streamer_name": [known["streamer_name"]] * 2 + ["fresh_streamer"] * 2,
            START: [cut + 1, cut + 5, cut + 9, cut + 9],
            "time_end": [cut + 3, cut + 7, cut + 12, cut + 12],
        }
    )
    frame = pd.concat([frame, arrivals], ignore_index=True)
    paths = {"before": tmp / "before.csv", "after": tmp / "after.csv", "all": tmp / "all.csv"}
    frame[frame[START] < cut].to_csv(paths["before"], index=False)
    frame[frame[START] >= cut].to_csv(paths["after"], index=False)
    frame.to_csv(paths["all"], index=False)
    # Overlapping: the last 20%, half of it already in the model.
    overlap = tmp / "overlap.csv"
    frame[frame[START] >= frame[START].quantile(0.8)].to_csv(overlap, index=False)
    paths["overlap"] = overlap
    return tmp, paths


def train(data, model) -> None:
    result = run_cli("als_fit.py", "--data", str(data), "--model", str(model), "--factors", "16")
    assert result.returncode == 0, result.stderr


def pairs(model) -> pd.DataFrame:
    """Every (viewer, streamer) pair of a model's history with its aggregates, by name."""
    coo = model.count.tocoo()  # row-major, as the data of every per-pair array
    frame = pd.DataFrame(
        {
            "uid": model.users.ids[coo.row],
            "streamer": model.streamers.ids[coo.col],
            "count": coo.data,
            "watch_time": model.watch_time.data,
            "last_seen": model.last_seen.data,
        }
    )
    return frame.sort_values(["uid", "streamer"], ignore_index=True)


def test_an_update_has_the_history_of_a_full_retrain(logs):
    tmp, paths = logs
    full, updated = tmp / "full.pkl", tmp / "updated.pkl"
    train(paths["all"], full)
    train(paths["before"], updated)
    before = load_model(updated)
    result = run_cli("als_fit.py", "--update", "--data", str(paths["after"]), "--model", str(updated))
    assert result.returncode == 0, result.stderr
    assert f"updated {updated} with {paths['after']}" in result.stdout and "ranker weights kept" in result.stdout
    want, got = load_model(full), load_model(updated)
    # The same viewers and streamers; the ones the model knew keep their rows.
    assert set(got.users.ids) == set(want.users.ids) and set(got.streamers.ids) == set(want.streamers.ids)
    assert list(got.users.ids[: before.n_users]) == list(before.users.ids)
    assert list(got.streamers.ids[: before.n_streamers]) == list(before.streamers.ids)
    # Every pair's sessions, watch time and last session as the full retrain counts them.
    pd.testing.assert_frame_equal(pairs(got), pairs(want))
    assert got.rankers["all"].to_dict().keys() == before.rankers["all"].to_dict().keys()
    for name in before.rankers:
        np.testing.assert_array_equal(got.rankers[name].linear()[1], before.rankers[name].linear()[1])
    chain = got.metadata["updated"]
    assert chain["previous_created_at"] == before.metadata["created_at"]
    assert [f["source"] for f in chain["files"]] == [str(paths["after"])]

    # The same sessions again, or a file overlapping what the model has: nothing counted twice.
    for again in (paths["after"], paths["overlap"]):
        result = run_cli("als_fit.py", "--update", "--data", str(again), "--model", str(updated))
        assert result.returncode == 0, result.stderr
        pd.testing.assert_frame_equal(pairs(load_model(updated)), pairs(want))
    assert len(load_model(updated).metadata["updated"]["files"]) == 3

    # It serves the API contract, new viewers included.
    assert before.users.get("newcomer") is None and before.streamers.get("fresh_streamer") is None
    assert got.users.get("newcomer") is not None and got.streamers.get("fresh_streamer") is not None
    app = create_app(Settings(model_path=updated, _env_file=None))
    with TestClient(app) as client:
        for uid in ("newcomer", before.users.ids[0]):
            body = client.get(f"/recomendations/user/{uid}", params={"k": 5}).json()
            assert body["source"] == "personal" and len(body["recommendations"]) == 5


def test_a_failed_update_leaves_the_model_file_as_it_was(logs, block_model_path):
    tmp, paths = logs
    model = tmp / "kept.pkl"
    train(paths["before"], model)
    kept = model.read_bytes()
    bad = tmp / "bad.csv"
    bad.write_text("uid,session_id,streamer_name,time_start,time_end\n1,1,a,5,x\n")
    iso = tmp / "iso.csv"
    iso.write_text("uid,session_id,streamer_name,time_start,time_end\n1,1,a,2024-05-01T10:00:00,2024-05-01T11:00:00\n")
    for data, says in ((bad, "bad.csv"), (tmp / "missing.csv", "missing.csv"), (iso, "expected integer times")):
        result = run_cli("als_fit.py", "--update", "--data", str(data), "--model", str(model))
        # One error line (after the step log lines), no traceback.
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr
        assert says in errors[0]
    result = run_cli("als_fit.py", "--update", "--model", str(model))
    assert result.returncode == 2 and "--update needs --data" in result.stderr
    result = run_cli("als_fit.py", "--update", "--data", str(paths["after"]), "--model", str(tmp / "none.pkl"))
    assert result.returncode == 2 and "no model file" in result.stderr
    assert model.read_bytes() == kept


def test_an_incremental_update_keeps_stored_lists_and_ranking_on_request_in_agreement(logs, tmp_path):
    """Lists kept for viewers without new sessions, ranked again for the others: every stored list
    is what ranking the updated model gives, and so is every stored history-entry score."""
    tmp, paths = logs
    path = tmp_path / "model.pkl"
    train(paths["before"], path)
    before = load_model(path)
    sessions = read_sessions(paths["after"])
    model, _ = update(before, sessions)
    assert model.frozen_pop_feature is not None
    full, best = ranked_lists(model, model.rankers, LIST_LENGTH)
    np.testing.assert_allclose(best, model.best_als, rtol=1e-6)
    for name, (ids, scores) in full.items():
        np.testing.assert_array_equal(ids, model.lists[name][0])
        np.testing.assert_allclose(scores, model.lists[name][1], rtol=1e-5, atol=1e-5)
    for name, stored in model.own_scores.items():
        np.testing.assert_allclose(stored, entry_scores(model, name), rtol=1e-5, atol=1e-5)
    # Viewers without new sessions kept their lists as they were; those with new ones were ranked again.
    active = set(sessions.frame["uid"].astype(str))
    quiet = [r for r in range(before.n_users) if before.users.ids[r] not in active]
    assert quiet and len(active) > 10
    kept = [r for r in quiet if np.array_equal(model.lists["all"][0][r], before.lists["all"][0][r])]
    assert len(kept) > 0.9 * len(quiet)
    # Written and read back, it is the same model.
    save_model(model, tmp_path / "again.pkl")
    loaded = load_model(tmp_path / "again.pkl")
    np.testing.assert_array_equal(loaded.pop_feature, model.pop_feature)
    np.testing.assert_array_equal(loaded.lists["new"][0], model.lists["new"][0])

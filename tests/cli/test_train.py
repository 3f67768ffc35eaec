"""The trainer's command line, run as a user runs it."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.model_file import load_model
from streamrec.model.scoring import recommend_for
from tests.server.helpers import clean_env, run_cli


def test_training_summary_and_metadata(block_csv, tmp_path):
    path = tmp_path / "m.pkl"
    result = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "8")
    assert result.returncode == 0, result.stderr
    assert "60 users, 12 streamers" in result.stdout
    assert f"model: {path}" in result.stdout
    meta = load_model(path).metadata
    assert meta["rows_read"] == 60 * 12
    assert meta["users"] == 60 and meta["streamers"] == 12
    assert meta["params"]["factors"] == 8
    assert len(meta["source_sha256"]) == 64
    assert meta["versions"]["implicit"] == "0.7.3"
    assert meta["created_at"].endswith("+00:00")


def test_same_data_gives_the_same_model(block_csv, tmp_path):
    factors = []
    for name in ("a.pkl", "b.pkl"):
        result = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(tmp_path / name), "--factors", "8")
        assert result.returncode == 0, result.stderr
        factors.append(load_model(tmp_path / name).als.item_factors)
    np.testing.assert_array_equal(*factors)


def test_settings_come_from_the_environment(block_csv, tmp_path):
    path = tmp_path / "from_env.pkl"
    env = clean_env(DATA_PATH=str(block_csv), MODEL_PATH=str(path))
    result = run_cli("als_fit.py", "--factors", "4", "--iterations", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert path.is_file()
    help_text = run_cli("als_fit.py", "--help", env=env).stdout
    assert str(path) in "".join(help_text.split())  # --help shows the defaults in force


def test_if_missing_keeps_an_existing_model(block_model_path):
    before = block_model_path.read_bytes()
    result = run_cli("als_fit.py", "--model", str(block_model_path), "--if-missing")
    assert result.returncode == 0
    assert "not retraining" in result.stdout
    assert block_model_path.read_bytes() == before


def test_failed_run_leaves_the_previous_model_byte_for_byte(block_model_path, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,session_id,streamer_name,time_start,time_end\n1,1,a,9,3\n")
    before = block_model_path.read_bytes()
    result = run_cli("als_fit.py", "--data", str(bad), "--model", str(block_model_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert block_model_path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--factors", "0"], "--factors must be >= 1"),
        (["--alpha", "-1"], "--alpha must be > 0"),
        (["--strength", "likes"], "invalid choice"),
    ],
)
def test_bad_flags_are_rejected(block_csv, tmp_path, args, message):
    result = run_cli("als_fit.py", "--data", str(block_csv), "--model", str(tmp_path / "m.pkl"), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_demo_data_is_the_default(tmp_path):
    env = clean_env(DEMO_DATA_PATH=str(tmp_path / "demo.csv"), MODEL_PATH=str(tmp_path / "m.pkl"))
    result = run_cli("als_fit.py", "--iterations", "3", "--factors", "16", env=env)
    assert result.returncode == 0, result.stderr
    assert "trained on demo" in result.stdout
    model = load_model(tmp_path / "m.pkl")
    assert model.n_users > 1000
    assert recommend_for(model, "1", k=10)[0] == "personal"

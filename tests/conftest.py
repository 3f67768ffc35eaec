"""Shared fixtures: a tiny session log whose right answers are obvious, and a model trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import block_sessions
from tests.server.helpers import clean_env, run_cli


@pytest.fixture(scope="session")
def block_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "block.csv"
    block_sessions().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def block_model_path(tmp_path_factory, block_csv) -> Path:
    """A model trained by the real CLI on the block log. Two audiences make a rank-2 matrix, so
    two factors; with many more factors than the 12 streamers support, ALS memorises each
    viewer's own three streamers and the block structure is lost."""
    path = tmp_path_factory.mktemp("model") / "model.pkl"
    result = run_cli(
        "als_fit.py", "--data", str(block_csv), "--model", str(path), "--factors", "2", "--iterations", "10"
    )
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="session")
def demo_size_model(tmp_path_factory) -> Path:
    """The model `make run` serves: the built-in demo log (8,000 viewers, about 15,800 streamers),
    with its streamer catalog beside the sessions, trained by the real CLI."""
    folder = tmp_path_factory.mktemp("demo")
    env = clean_env(DEMO_DATA_PATH=str(folder / "demo_sessions.csv"), MODEL_PATH=str(folder / "model.pkl"))
    result = run_cli("als_fit.py", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder / "model.pkl"

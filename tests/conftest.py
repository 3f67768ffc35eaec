"""Shared fixtures: a tiny session log whose right answers are obvious, and a model trained on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench.common
from bench.common import ROOT, free_port, stop_server  # noqa: F401 - shared with the tests

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


class Exploit:
    """Pickles to a payload that would create the file `target` when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no settings leaking in from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {"DATA_PATH", "MODEL_PATH", "DEMO_DATA_PATH", "ADMIN_TOKEN", "PORT", "HOST", "WORKERS"}
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a project script the way a user does: `python script.py ...` from the repository root."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def start_server(model_path, *args: str, **env: str):
    """`python platform.py` serving `model_path` as a real process; (process, base URL)."""
    return bench.common.start_server(["platform.py", "--model", str(model_path), *args], env=clean_env(**env))


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.fixture(scope="session")
def demo_size_model(tmp_path_factory) -> Path:
    """The model `make run` serves: the built-in demo log (8,000 viewers, about 15,800 streamers),
    with its streamer catalog beside the sessions, trained by the real CLI."""
    folder = tmp_path_factory.mktemp("demo")
    env = clean_env(DEMO_DATA_PATH=str(folder / "demo_sessions.csv"), MODEL_PATH=str(folder / "model.pkl"))
    result = run_cli("als_fit.py", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder / "model.pkl"

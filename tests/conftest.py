"""Shared fixtures: a tiny session log whose right answers are obvious, and a model trained on it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`python platform.py` as a real process on a free port; returns once /health answers.
    Output goes to a file (a pipe nobody reads would fill up and stall the server)."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "platform.py", "--port", str(port), "--model", str(model_path), *args],
        cwd=ROOT,
        env=clean_env(LOG_LEVEL="WARNING", **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log_path = log.name
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {Path(log.name).read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become ready in 60 s")


def stop_server(proc: subprocess.Popen) -> str:
    """Stop a server from start_server and return what it printed."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return Path(proc.log_path).read_text()

"""Half a minute of sustained load on the real server: zero errors, flat memory (bench/soak.py runs
longer ones by hand)."""

from __future__ import annotations

import json

from tests.server.helpers import ROOT, run_cli


def test_sustained_load_many_users_zero_errors_flat_memory(tmp_path):
    data, model = tmp_path / "sessions.csv", tmp_path / "model.pkl"
    assert run_cli("-m", "streamrec.data.demo", "--users", "3000", "--out", str(data)).returncode == 0
    trained = run_cli("als_fit.py", "--data", str(data), "--model", str(model))
    assert trained.returncode == 0, trained.stderr

    result = run_cli(
        str(ROOT / "bench" / "soak.py"), "--model", str(model), "--seconds", "30", "--concurrency", "8", timeout=240
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout
    assert figures["errors"] == 0 and figures["statuses"] == {"200": figures["requests"]}
    assert figures["requests"] > 1000 and figures["distinct_users"] > 1000
    assert figures["anon_growth_mb"] <= 20

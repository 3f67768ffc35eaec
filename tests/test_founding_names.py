"""The founding description's four names, each a public function where it belongs, doing what
the CLI and the service do."""

from __future__ import annotations

import platform as stdlib_platform

import httpx2 as httpx

from streamrec.data.interactions import process_data
from streamrec.model.model_file import load_model, save_model
from streamrec.model.scoring import personal_recommendations
from streamrec.train.pipeline import TrainParams, fit_model
from tests.helpers import GROUP_A, block_sessions
from tests.server.helpers import start_server, stop_server


def test_process_fit_load_and_recommend_as_the_service_does(block_csv, tmp_path):
    inter = process_data(block_csv)
    frame = block_sessions()
    assert inter.shape == (60, 12) and inter.count.sum() == len(frame)

    model = fit_model(block_csv, TrainParams(factors=2, iterations=10))
    path = tmp_path / "model.pkl"
    save_model(model, path)
    loaded = load_model(path)
    source, items = personal_recommendations(loaded, "4", k=3, exclude_watched=True)
    watched = set(frame.loc[frame["uid"] == 4, "streamer_name"])
    assert source == "personal" and {name for name, _ in items} <= set(GROUP_A) - watched
    assert personal_recommendations(loaded, "stranger", k=2)[0] == "popular"

    proc, base = start_server(path)
    try:
        body = httpx.get(f"{base}/recomendations/user/4", params={"k": 3, "exclude_watched": "true"}).json()
    finally:
        stop_server(proc)
    assert [(r["streamer_name"], r["score"]) for r in body["recommendations"]] == items


def test_the_standard_library_platform_is_untouched():
    assert callable(stdlib_platform.python_version) and not hasattr(stdlib_platform, "personal_recommendations")

"""The Spark engine in local mode, on small logs: the same model file served by the real service,
the same rankings of the block log as the default engine, the same input rules and errors."""

from __future__ import annotations

import gzip
import json
import shutil

import httpx2 as httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from streamrec.data.interactions import aggregate
from streamrec.data.sessions import END, INTEGER, START, STREAMER, UID, DataError, read_sessions
from streamrec.model.model_file import load_model
from streamrec.model.scoring import recommend_for
from streamrec.train import spark as spark_engine
from streamrec.train import spark_log
from streamrec.train.pipeline import TrainParams
from tests.helpers import ERRORS, GROUP_A, GROUP_B, block_sessions, materialise
from tests.server.helpers import clean_env, run_cli, start_server, stop_server

MASTER = "local[2]"


@pytest.fixture(scope="module")
def spark():
    return spark_log.spark_session(MASTER)


@pytest.fixture(scope="module")
def spark_trained(tmp_path_factory, block_csv):
    """`als_fit.py --engine spark --evaluate` on the block log, as a user runs it: (model, stdout)."""
    model = tmp_path_factory.mktemp("spark") / "model.pkl"
    args = ["--data", str(block_csv), "--model", str(model), "--factors", "2", "--iterations", "10"]
    result = run_cli("als_fit.py", "--engine", "spark", "--spark-master", MASTER, "--evaluate", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return model, result.stdout


def test_a_spark_trained_model_is_served_by_the_real_service(spark_trained):
    model, stdout = spark_trained
    assert "60 users, 12 streamers" in stdout and "ranker: learned on the validation period" in stdout
    proc, base = start_server(model)
    try:
        body = httpx.get(f"{base}/recomendations/user/4", params={"k": 3, "exclude_watched": "true"}).json()
        assert body["user_id"] == "4" and body["source"] == "personal"
        assert {r["streamer_name"] for r in body["recommendations"]} <= set(GROUP_A) - _watched("4")
        unknown = httpx.get(f"{base}/recomendations/user/stranger", params={"k": 2}).json()
        assert unknown["source"] == "popular" and len(unknown["recommendations"]) == 2
        assert httpx.get(f"{base}/health").json()["users"] == 60
    finally:
        stop_server(proc)
    assert load_model(model).metadata["engine"] == "spark"


def test_the_evaluation_runs_on_the_spark_engine(spark_trained):
    model, stdout = spark_trained
    report = json.loads(model.with_suffix(".evaluation.json").read_text())
    assert "served" in stdout and report["users"]["all"] > 0
    # The blocks are obvious: whatever each viewer watches next is in their own group.
    assert report["results"]["new"]["served"]["hit@10"] == pytest.approx(1.0)


def _watched(uid: str) -> set[str]:
    frame = block_sessions()
    return set(frame.loc[frame["uid"].astype(str) == uid, "streamer_name"])


@pytest.mark.parametrize("engine", ["implicit", "spark"])
def test_both_engines_rank_the_block_structure(engine, block_model_path, spark_trained):
    model = load_model(block_model_path if engine == "implicit" else spark_trained[0])
    for uid in map(str, range(1, 61)):
        group = GROUP_A if int(uid) <= 30 else GROUP_B
        mine = _watched(uid)
        _, own = recommend_for(model, uid, k=len(mine))
        _, new = recommend_for(model, uid, k=3, exclude_watched=True)
        assert {n for n, _ in own} == mine, (engine, uid)  # repeat viewing first
        assert len(new) == 3 and {n for n, _ in new} <= set(group) - mine, (engine, uid)  # then their own block


MESSY = (
    "uid,session_id,streamer_name,time_start,time_end\n"
    "1,1,a,1,3\n"
    "1,2,b,4,4\n"
    " 2 ,3, a ,5,9\n"
    "2,3,a,5,9\n"  # the same session again (ids stripped)
    ",4,a,1,2\n"  # blank uid
    "3,5,,1,2\n"  # blank streamer
    "3,6,c,x,2\n"  # unparseable time
    "3,7,c,8,2\n"  # ends before it starts
    "3,8,c,1.0,2\n"  # a whole number written as a float
    "4,9,b,2,\n"  # missing time
    "4,10,a,3,7\n"
)


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(zip(frame[UID].astype(str), frame[STREAMER].astype(str), frame[START], frame[END], strict=True))


def _spark_rows(log) -> list[tuple]:
    return _rows(log.frame.toArrow().to_pandas())


def test_drop_rules_and_counts_match_the_default_engine(spark, tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    ours, theirs = spark_log.read_log(spark, path), read_sessions(path)
    assert (ours.rows_read, ours.rows_used, ours.time_format) == (theirs.rows_read, theirs.rows_used, "integer")
    assert ours.dropped == theirs.dropped
    assert _spark_rows(ours) == _rows(theirs.frame)


def test_every_input_layout_reads_the_same_sessions(spark, tmp_path):
    frame = block_sessions()
    expected = _rows(frame)
    headered = tmp_path / "headered.csv"
    frame.to_csv(headered, index=False)
    twitch = tmp_path / "twitch.csv.gz"  # the public file: no header, gzip
    with gzip.open(twitch, "wt") as f:
        frame.to_csv(f, index=False, header=False)
    parts = tmp_path / "parts"  # a directory of part files, each with its header, as Spark writes them
    parts.mkdir()
    (parts / "_SUCCESS").touch()
    for i, lo in enumerate(range(0, len(frame), 300)):
        frame.iloc[lo : lo + 300].to_csv(parts / f"part-{i:05d}.csv", index=False)
    parquet = tmp_path / "sessions.parquet"
    frame.astype({"uid": str}).to_parquet(parquet, index=False)
    for path in (headered, twitch, parts, parquet):
        log = spark_log.read_log(spark, path)
        assert log.rows_read == len(frame) and log.dropped == {}, path
        assert _spark_rows(log) == expected, path
    assert spark_log.read_log(spark, twitch).layout == "twitch (no header)"


def test_iso_times_are_epoch_seconds_as_in_the_default_engine(spark, tmp_path):
    path = tmp_path / "iso.csv"
    path.write_text(
        "uid,session_id,streamer_name,time_start,time_end\n"
        "1,1,a,2024-05-01T10:00:00Z,2024-05-01T11:30:00+00:00\n"
        "2,2,b,2024-05-01 12:00:00,2024-05-01T12:10:00\n"
    )
    ours, theirs = spark_log.read_log(spark, path), read_sessions(path)
    assert ours.time_format == theirs.time_format == "iso8601"
    assert _spark_rows(ours) == _rows(theirs.frame)


def test_pairs_are_aggregated_as_on_one_machine(spark, block_csv):
    log = spark_log.read_log(spark, block_csv)
    indexed = spark_engine._index(spark, log)
    pairs, lo, hi = spark_engine._pairs(indexed.sessions, time_format=INTEGER)
    got = pairs.toArrow().to_pandas()
    inter = aggregate(read_sessions(block_csv))
    assert (lo, hi) == (inter.time_min, inter.time_max)
    rows = inter.users.rows(indexed.users.ids[got["u"].to_numpy()])
    cols = inter.streamers.rows(indexed.streamers.ids[got["s"].to_numpy()])
    assert len(got) == inter.nnz
    for name, matrix in (
        ("count", inter.count),
        ("watch", inter.watch_time),
        ("last", inter.last_seen),
        ("recent", inter.recent),
        ("decayed", inter.decayed),
    ):
        np.testing.assert_allclose(got[name].to_numpy(), np.asarray(matrix[rows, cols]).ravel(), rtol=1e-6)


def test_hyperparameters_map_to_implicits_meaning(spark):
    params = TrainParams(alpha=10.0, regularization=0.1, strength="sessions")
    settings = spark_engine.mllib_als(params, pairs_per_user=20.0)
    assert settings["alpha"] == 1.0 and settings["regParam"] == pytest.approx(0.1 / 20)
    counts = spark.createDataFrame(pa.table({"count": [1.0, 3.0], "watch": [5.0, 5.0]}))
    ratings = [r[0] for r in counts.select(spark_engine._rating(params)).collect()]
    # MLlib's confidence 1 + 1 * rating is implicit's alpha * strength: 10 and 30.
    assert [1 + r for r in ratings] == pytest.approx([10.0, 30.0])


SAME_ERRORS = [case for case in ERRORS if case not in {"directory", "truncated gzip", "ragged row"}]


@pytest.mark.parametrize("case", SAME_ERRORS)
def test_unusable_input_gives_the_default_engines_error(case, spark, tmp_path):
    path = materialise(tmp_path, ERRORS[case][0])
    with pytest.raises(DataError) as theirs:
        read_sessions(path)
    with pytest.raises(DataError) as ours:
        spark_log.read_log(spark, path)
    if case == "mixed time formats":  # Spark reports no line numbers
        assert str(ours.value).split(" (e.g.")[0] == str(theirs.value).split(" (e.g.")[0]
    elif case == "unterminated quote":  # nor the CSV parser's own words
        assert str(ours.value).split("found")[0] == str(theirs.value).split("found")[0]
        assert "unterminated quote" in str(ours.value)
    else:
        assert str(ours.value) == str(theirs.value)


def test_malformed_compressed_and_directory_input_errors(spark, tmp_path):
    ragged = materialise(tmp_path, ERRORS["ragged row"][0])
    with pytest.raises(DataError, match="expected well-formed CSV; found 1 row"):
        spark_log.read_log(spark, ragged)
    truncated = tmp_path / "cut.csv.gz"
    data = gzip.compress(ERRORS["header with no rows"][0] + b"1,1,a,1,2\n" * 20000)
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="expected a complete gzip stream"):
        spark_log.read_log(spark, truncated)
    misnamed = tmp_path / "gz.csv"
    misnamed.write_bytes(data)
    with pytest.raises(DataError, match="expected a name ending in .gz"):
        spark_log.read_log(spark, misnamed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found an empty directory"):
        spark_log.read_log(spark, tmp_path / "empty")


def test_bad_input_on_spark_is_one_line_and_the_model_is_untouched(block_model_path, tmp_path):
    model = tmp_path / "model.pkl"
    shutil.copy(block_model_path, model)
    before = model.read_bytes()
    data = materialise(tmp_path, ERRORS["times that do not parse"][0])
    result = run_cli("als_fit.py", "--engine", "spark", "--spark-master", MASTER, "--data", data, "--model", str(model))
    # Our part of stderr is one line, the default engine's; the JVM prints its own banner first.
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    default = run_cli("als_fit.py", "--data", data, "--model", str(model))
    assert result.returncode == default.returncode == 2
    assert ours == default.stderr.splitlines() and ours[0].startswith(f"error: {data}: expected whole-number")
    assert "Traceback" not in result.stderr and result.stderr.endswith(ours[0] + "\n")
    assert model.read_bytes() == before


def test_without_pyspark_the_spark_engine_says_how_to_install_it(block_csv, tmp_path):
    code = (
        "import sys; sys.modules['pyspark'] = None; import als_fit; "
        f"sys.exit(als_fit.main(['--engine', 'spark', '--data', {str(block_csv)!r}, "
        f"'--model', {str(tmp_path / 'm.pkl')!r}]))"
    )
    result = run_cli("-c", code, env=clean_env())
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {spark_log.INSTALL_HINT}\n"
    assert not (tmp_path / "m.pkl").exists()


def test_a_spark_trained_model_has_the_momentum_counts_and_can_be_updated(spark_trained, block_csv, tmp_path):
    model_path = tmp_path / "model.pkl"
    shutil.copy(spark_trained[0], model_path)
    spark_model = load_model(model_path)
    assert spark_model.recent is not None and spark_model.decayed is not None
    # The same momentum counts as the default engine aggregates, pair by pair.
    sessions = read_sessions(block_csv)
    local = aggregate(sessions.frame, sessions.time_format, spark_model.users, spark_model.streamers)
    np.testing.assert_array_equal(local.count.indices, spark_model.count.indices)
    np.testing.assert_allclose(local.recent.data, spark_model.recent.data, rtol=1e-5)
    np.testing.assert_allclose(local.decayed.data, spark_model.decayed.data, rtol=1e-4)
    new = tmp_path / "new.csv"
    new.write_text("uid,session_id,streamer_name,time_start,time_end\n1,1,alpha0,120,122\nnewcomer,2,bravo1,121,124\n")
    result = run_cli("als_fit.py", "--update", "--data", str(new), "--model", str(model_path))
    assert result.returncode == 0, result.stderr
    updated = load_model(model_path)
    assert updated.users.get("newcomer") is not None and updated.metadata["engine"] == "spark"

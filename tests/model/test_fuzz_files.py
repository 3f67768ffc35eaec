"""Random mutations of a small model file (header fields and array bytes) and of a live-set file:
each one either loads and then answers the API contract, or is refused with one line; never a
traceback, a crash or a hang. Seeded, so a failure names a mutation that can be replayed."""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from streamrec.data.catalog import Catalog, catalog_codes
from streamrec.model.model_file import ModelError, load_model
from streamrec.model.scoring import similar
from streamrec.serve.app import create_app
from streamrec.serve.live import LiveFileError, LiveStream, read_live
from streamrec.serve.serving import ServedModel
from streamrec.settings import Settings
from tests.helpers import answer_body

MODEL_MUTATIONS = 300
LIVE_MUTATIONS = 300
HOSTILE = [
    None, True, False, -1, 0, 1, 2**31, 2**63, 2**62 + 1, -(2**70), 1e308, -1e-300, 0.5, "", "x", "9" * 400,
    [], {}, [1, 2], {"a": 1}, [[[[[[[[[[]]]]]]]]]], "NaN", "Infinity", "2026-01-01T00:00:00+00:00",
]  # fmt: skip
CATALOG = {f"alpha{i}": ("Chess", "en") for i in range(6)} | {f"bravo{i}": ("Art", "de") for i in range(6)}


def leaves(node, path=()):
    """Every path into a JSON value (containers too)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, i))


def set_at(node, path, value):
    if not path:
        return value
    out = json.loads(json.dumps(node))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def delete_at(node, path):
    out = json.loads(json.dumps(node))
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


def mutate_json(rng: random.Random, value):
    """A hostile value at a random place, a key or item deleted, or a constant JSON cannot hold."""
    paths = list(leaves(value))
    path = rng.choice(paths)
    roll = rng.random()
    if roll < 0.15 and path:
        return json.dumps(delete_at(value, path))
    if roll < 0.25:
        return json.dumps(set_at(value, path, "@CONST@")).replace('"@CONST@"', rng.choice(["NaN", "Infinity", "1e400"]))
    return json.dumps(set_at(value, path, rng.choice(HOSTILE)))


def mutate_model(rng: random.Random, data: bytes) -> bytes:
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16 : 16 + length])
    first = min(spec["offset"] for spec in header["arrays"].values())
    roll = rng.random()
    if roll < 0.45:  # a header field
        text = mutate_json(rng, header).encode()
        if 16 + len(text) > first:
            text = text[: first - 16]
        return data[:8] + len(text).to_bytes(8, "little") + text.ljust(first - 16, b" ") + data[first:]
    if roll < 0.9:  # bytes of one array: a few, or all of it
        spec = rng.choice(list(header["arrays"].values()))
        size = math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize
        out = bytearray(data)
        if size and rng.random() < 0.6:
            for _ in range(rng.randint(1, 8)):
                out[spec["offset"] + rng.randrange(size)] = rng.randrange(256)
        else:
            out[spec["offset"] : spec["offset"] + size] = rng.randbytes(size)
        return bytes(out)
    if roll < 0.95:  # cut
        return data[: rng.randrange(len(data))]
    return data[:8] + rng.randbytes(8) + data[16:]  # the header's length


def check_answer(body: bytes, k: int) -> None:
    """The API contract of a recommendation body: strict JSON, at most k distinct streamers, finite
    scores in order."""

    def no_constant(name):
        raise AssertionError(f"{name} in an answer")

    answer = json.loads(body, parse_constant=no_constant)
    items = answer["recommendations"]
    assert answer["source"] in ("personal", "popular", "recent") and len(items) <= k
    names = [i["streamer_name"] for i in items]
    scores = [i["score"] for i in items]
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


def exercise(model, live_names) -> None:
    served = ServedModel(model, codes=catalog_codes(Catalog(CATALOG), model.streamers))
    served = served.with_live([LiveStream(n) for n in live_names])
    for uid in ("1", "7", "59", "nobody"):
        for k, exclude, live_only, cats in (
            (10, False, False, None),
            (3, True, True, ["Chess"]),
            (40, False, False, ["Art"]),
        ):
            check_answer(answer_body(served, uid, k, exclude, live_only, ["alpha1"], cats, None), k)
    rows, scores = similar(model, 0, 5)
    assert np.isfinite(scores).all()


def test_mutated_model_files_load_and_answer_or_are_refused_in_one_line(block_model_path, tmp_path):
    rng = random.Random(18)
    data = block_model_path.read_bytes()
    path = tmp_path / "model.pkl"
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(MODEL_MUTATIONS):
        path.write_bytes(mutate_model(rng, data))
        start = time.perf_counter()
        try:
            model = load_model(path)
        except ModelError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), (i, str(exc))
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
            exercise(model, ["alpha0", "bravo3", "ghost"])
            if outcomes["loaded"] % 10 == 1:  # and the real app with its lifespan, now and then
                app = create_app(Settings(model_path=path, _env_file=None, metrics=False))
                with TestClient(app) as client:
                    r = client.get("/recomendations/user/1", params={"k": 5})
                    assert r.status_code == 200
                    check_answer(r.content, 5)
                    assert client.get("/streamers/alpha0/similar").status_code in (200, 404)
        assert time.perf_counter() - start < 10, f"mutation {i} took too long"
    print(f"model file mutations: {outcomes}")
    assert outcomes["loaded"] >= 20 and outcomes["refused"] >= 100, outcomes


def test_mutated_live_files_load_and_answer_or_are_refused_in_one_line(block_model_path, tmp_path):
    rng = random.Random(18)
    model = load_model(block_model_path)
    valid = {
        "since": "2026-11-30T12:00:00+00:00",
        "streamers": [
            "alpha0",
            {"streamer_name": "alpha1", "category": "Chess", "language": "en", "viewers": 40},
            {"streamer_name": "bravo2", "category": "Art"},
            "ghost",
        ],
    }
    path = tmp_path / "live.json"
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(LIVE_MUTATIONS):
        text = mutate_json(rng, valid).encode()
        if rng.random() < 0.2:  # bytes, not fields
            text = bytearray(text)
            text[rng.randrange(len(text))] = rng.randrange(256)
            text = bytes(text)
        path.write_bytes(text)
        try:
            published = read_live(path, 1 << 20)
        except LiveFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}: "), (i, str(exc))
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        streams, since, _ = published
        served = ServedModel(model, codes=catalog_codes(Catalog(CATALOG), model.streamers)).with_live(streams, since)
        for uid, cats in (("1", None), ("nobody", ["Chess"]), ("40", ["chess", "Art"])):
            check_answer(answer_body(served, uid, 5, False, True, None, cats, None), 5)
    print(f"live file mutations: {outcomes}")
    assert outcomes["loaded"] >= 30 and outcomes["refused"] >= 100, outcomes


@pytest.mark.parametrize("seed", range(3))
def test_the_mutations_are_seeded(seed, block_model_path):
    data = block_model_path.read_bytes()
    assert mutate_model(random.Random(seed), data) == mutate_model(random.Random(seed), data)

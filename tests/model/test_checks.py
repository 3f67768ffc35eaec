"""Crafted model files against the real loader: each is refused with one line naming what was
expected and what was found, before any of it is used (model_checks.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrec.model.model_file import ModelError, load_model
from streamrec.model.scoring import recommend_for


def header_of(data: bytes) -> tuple[dict, int]:
    length = int.from_bytes(data[8:16], "little")
    return json.loads(data[16 : 16 + length]), length


def with_header(data: bytes, header: dict | str) -> bytes:
    """The file with another header text in the room the old one had (arrays stay where they are)."""
    _, length = header_of(data)
    first = min(spec["offset"] for spec in header_of(data)[0]["arrays"].values())
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    assert 16 + len(text) <= first, "the crafted header must fit before the first array"
    return data[:8] + len(text).to_bytes(8, "little") + text.ljust(first - 16, b" ") + data[first:]


def with_array(data: bytes, name: str, values: np.ndarray) -> bytes:
    """The file with array `name`'s bytes replaced (same dtype and size)."""
    spec = header_of(data)[0]["arrays"][name]
    raw = np.asarray(values, dtype=spec["dtype"]).tobytes()
    assert len(raw) == int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
    return data[: spec["offset"]] + raw + data[spec["offset"] + len(raw) :]


def refused(path, data: bytes) -> str:
    path.write_bytes(data)
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert message.endswith("train one with: python als_fit.py"), message
    return message


def edit(header: dict, dotted: str, value) -> dict:
    """A copy of `header` with the field at `dotted` (a.b.0.c) set to `value`."""
    out = json.loads(json.dumps(header))
    *path, last = dotted.split(".")
    node = out
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


# The header text as JSON cannot hold Infinity or 1e400 as Python writes them: spliced as text.
RAW = {
    "shape Infinity": ('"shape": [60, 2]', '"shape": [Infinity]', "expected finite numbers; found Infinity"),
    "offset 1e400": ('"offset": 8192', '"offset": 1e400', "header field arrays.user_factors.offset"),
    "NaN bias": ('"bias": ', '"bias": NaN, "_": ', "expected finite numbers; found NaN"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_non_finite_numbers_in_the_header_are_refused(case, block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    _, length = header_of(data)
    text = data[16 : 16 + length].decode()
    old, new, expected = RAW[case]
    assert old in text
    message = refused(tmp_path / "m.pkl", with_header(data, text.replace(old, new, 1)))
    assert expected in message


def test_deeply_nested_json_is_refused_not_a_recursion_error(block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    header, _ = header_of(data)
    for depth in (1600, 40):  # past Python's recursion limit, and past the header's own limit
        text = json.dumps(header).replace('"metadata": {', '"deep": ' + "[" * depth + "]" * depth + ', "metadata": {')
        assert "nested at most 32 deep" in refused(tmp_path / "m.pkl", with_header(data, text))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("metadata", [1, 2], "header field metadata: Input should be a valid dictionary"),
        ("metadata.created_at", 5, "header field metadata.created_at: Input should be a valid string"),
        ("metadata.created_at", "yesterday", "metadata.created_at: expected an ISO 8601 time; found 'yesterday'"),
        ("arrays.user_factors.shape", [2**62 + 1, 4], "arrays.user_factors.shape[0]: Input should be less than"),
        ("arrays.user_factors.shape", [-1, 2], "arrays.user_factors.shape[0]: Input should be greater than"),
        ("arrays.user_factors.shape", [60], "array user_factors: expected float32 with 2 dimension(s)"),
        ("arrays.user_factors.dtype", "object", "arrays.user_factors.dtype: Input should be"),
        ("arrays.user_factors.offset", 8193, "expected an offset on a 4096-byte boundary"),
        ("arrays.history.indices.offset", "same as history.indptr", "(arrays overlap or are misaligned)"),
        ("arrays.history.count.dtype", "int64", "array history.count: expected float32 or float64"),
        ("als.factors", "2", "header field als.factors: Input should be a valid integer"),
        ("als.factors", 3, "array user_factors: expected shape [60, 3]"),
        ("time_span", 0, "header field time_span: Input should be greater than or equal to 1"),
        ("strength", "whatever", "header field strength: Input should be"),
        ("rankers.all.scale.0", 0.0, "rankers.all.scale: expected no zero"),
        ("rankers.all.coef.0", 1e300, "header field rankers.all.coef[0]: Input should be less than"),
        ("rankers.all.learned", "yes", "header field rankers.all.learned: Input should be a valid boolean"),
        ("lists", ["all"], "header field lists: expected all and new"),
        ("file_size", 5, "the header says 5 bytes"),
        ("format_version", [5], "has model format version [5]"),
        ("unexpected", 1, "header field unexpected: Extra inputs are not permitted"),
    ],
)
def test_crafted_header_fields_are_refused_with_one_line(field, value, expected, block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    header, _ = header_of(data)
    if value == "same as history.indptr":
        value = header["arrays"]["history.indptr"]["offset"]
    if field == "unexpected":
        crafted = {**header, "unexpected": value}
    elif field.startswith("arrays."):
        name, key = field[len("arrays.") :].rsplit(".", 1)
        crafted = json.loads(json.dumps(header))
        crafted["arrays"][name][key] = value
    else:
        crafted = edit(header, field, value)
    assert expected in refused(tmp_path / "m.pkl", with_header(data, crafted))


def test_every_array_must_be_there(block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    header, _ = header_of(data)
    del header["arrays"]["popularity"]
    assert "arrays: expected popularity; found none" in refused(tmp_path / "m.pkl", with_header(data, header))


@pytest.fixture(scope="module")
def sizes(block_model_path):
    model = load_model(block_model_path)
    return model.n_users, model.n_streamers, model.count.nnz


def crafted_arrays(sizes):
    n_users, n_streamers, nnz = sizes
    return {
        "history.indices out of range": (
            "history.indices",
            np.full(nnz, 1060214222),
            "history.indices: expected values in [0, 12)",
        ),
        "history.indices unsorted": (
            "history.indices",
            np.tile([2, 1, 0], nnz // 3 + 1)[:nnz],
            "history.indices: expected sorted rows",
        ),
        "indptr decreasing": (
            "history.indptr",
            np.r_[0, np.full(n_users - 2, nnz), 5, nnz],
            "history.indptr: expected offsets never decreasing",
        ),
        "indptr not ending at nnz": (
            "history.indptr",
            np.zeros(n_users + 1),
            "history.indptr: expected offsets from 0",
        ),
        "NaN factor": ("user_factors", np.full((n_users, 2), np.nan), "user_factors: expected finite numbers"),
        "huge factor": ("item_factors", np.full((n_streamers, 2), 1e30), "item_factors: expected finite numbers"),
        "infinite stored score": (
            "lists.all.scores",
            np.full((n_users, 24), np.inf),
            "lists.all.scores: expected finite scores",
        ),
        "stored id out of range": (
            "lists.new.ids",
            np.full((n_users, 12), 99),
            "lists.new.ids: expected values in [-1, 12)",
        ),
        "padding inside a list": (
            "lists.new.ids",
            np.tile([-1, 3] + [4] * 10, (n_users, 1)),
            "lists.new.ids: expected padding at the end",
        ),
        "NaN history term": ("history.bonus", np.full(nnz, np.nan), "history.bonus: expected finite numbers"),
        "NaN own score": ("history.own.all", np.full(nnz, np.nan), "history.own.all: expected finite numbers"),
        "negative popularity": ("popularity", np.full(n_streamers, -1.0), "popularity: expected finite numbers in [0"),
        "popular order repeats": (
            "popular_ranking",
            np.zeros(n_streamers),
            "popular_ranking: expected each streamer once",
        ),
        "catalog unsorted": (
            "catalog",
            np.arange(n_streamers)[::-1],
            "catalog: expected sorted distinct streamer rows",
        ),
        "id order out of range": ("users.order", np.full(n_users, 10**6), "users.order: expected values in [0, 60)"),
        "keys unsorted": ("streamers.keys", np.arange(n_streamers)[::-1], "streamers.keys: expected sorted keys"),
    }


CASES = [
    "history.indices out of range",
    "history.indices unsorted",
    "indptr decreasing",
    "indptr not ending at nnz",
    "NaN factor",
    "huge factor",
    "infinite stored score",
    "stored id out of range",
    "padding inside a list",
    "NaN history term",
    "NaN own score",
    "negative popularity",
    "popular order repeats",
    "catalog unsorted",
    "id order out of range",
    "keys unsorted",
]


@pytest.mark.parametrize("case", CASES)
def test_crafted_array_bytes_are_refused_with_one_line(case, sizes, block_model_path, tmp_path):
    name, values, expected = crafted_arrays(sizes)[case]
    data = with_array(block_model_path.read_bytes(), name, values)
    assert expected in refused(tmp_path / "m.pkl", data)


def test_an_id_map_blob_that_is_not_utf8_is_refused(block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    spec = header_of(data)[0]["arrays"]["streamers.blob"]
    blob = np.frombuffer(data, np.uint8, spec["shape"][0], spec["offset"]).copy()
    blob[0] = 0xFF
    assert "streamers.blob: expected UTF-8 text" in refused(
        tmp_path / "m.pkl", with_array(data, "streamers.blob", blob)
    )


def test_the_untouched_file_loads(block_model_path):
    model = load_model(block_model_path)
    assert recommend_for(model, "1")[0] == "personal"

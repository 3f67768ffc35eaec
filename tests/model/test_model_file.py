"""The model file: mapped arrays, a JSON header, and every way a file can be wrong."""

from __future__ import annotations

import json
import mmap
import os
import pickle
import stat

import numpy as np
import pytest

from streamrec.model import model_file
from streamrec.model.model_file import (
    ALIGN,
    FORMAT,
    FORMAT_VERSION,
    MAGIC,
    ModelError,
    check_writable,
    load_model,
    save_model,
    warm,
)
from streamrec.model.scoring import rank_recent, recommend_for
from tests.helpers import Exploit


@pytest.fixture(scope="module")
def model(block_model_path):
    return load_model(block_model_path)


def header_of(data: bytes) -> tuple[dict, int]:
    length = int.from_bytes(data[8:16], "little")
    return json.loads(data[16 : 16 + length]), length


def with_header(data: bytes, header: dict) -> bytes:
    """The same file with another header, written into the room before the first array."""
    first = min(spec["offset"] for spec in header_of(data)[0]["arrays"].values())
    text = json.dumps(header).encode()
    assert 16 + len(text) <= first
    return data[:8] + len(text).to_bytes(8, "little") + text.ljust(first - 16, b"\0") + data[first:]


def test_round_trip_keeps_everything(model, tmp_path):
    path = tmp_path / "copy.pkl"
    save_model(model, path)
    again = load_model(path)
    assert again.metadata == model.metadata
    np.testing.assert_array_equal(again.als.user_factors, model.als.user_factors)
    for name, (ids, scores) in model.lists.items():
        np.testing.assert_array_equal(again.lists[name][0], ids)
        np.testing.assert_array_equal(again.lists[name][1], scores)
    assert again.users.ids.tolist() == model.users.ids.tolist()
    assert recommend_for(again, "5", k=5) == recommend_for(model, "5", k=5)
    assert rank_recent(again, ["alpha1"], k=3)[0].tolist() == rank_recent(model, ["alpha1"], k=3)[0].tolist()


def test_arrays_are_mapped_from_the_file_not_read(model):
    """Every large array is a view of one mapping of the file; only the ALS factors use a
    copy-on-write mapping (implicit's solver wants writable buffers), the rest is read-only."""

    def mapping(a: np.ndarray):
        while isinstance(a, np.ndarray):
            a = a.base
        return a.obj if isinstance(a, memoryview) else a

    assert isinstance(mapping(model.lists["all"][0]), mmap.mmap)
    assert isinstance(mapping(model.count.indices), mmap.mmap)
    assert isinstance(mapping(model.users.keys), mmap.mmap)
    assert isinstance(mapping(model.als.item_factors), mmap.mmap)
    assert not model.lists["all"][0].flags.writeable and not model.count.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        model.lists["all"][0][0, 0] = 1


def test_arrays_start_on_page_boundaries(block_model_path):
    header, _ = header_of(block_model_path.read_bytes())
    assert header["arrays"] and all(spec["offset"] % ALIGN == 0 for spec in header["arrays"].values())
    assert header["file_size"] == block_model_path.stat().st_size


def test_written_file_has_the_umask_permissions(model, tmp_path):
    old = os.umask(0o022)
    try:
        save_model(model, tmp_path / "m.pkl")
        os.umask(0o077)
        save_model(model, tmp_path / "private.pkl")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pkl").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "private.pkl").stat().st_mode) == 0o600


def test_a_pickle_is_never_unpickled(tmp_path):
    """The old format, and anything else that is not ours, is refused on its first bytes."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "x": Exploit(marker)}))
    with pytest.raises(ModelError, match="not a model file of this service"):
        load_model(path)
    assert not marker.exists()


def test_a_pickle_in_place_of_the_header_runs_nothing(block_model_path, tmp_path):
    marker = tmp_path / "pwned"
    data = block_model_path.read_bytes()
    _, length = header_of(data)
    evil = pickle.dumps(Exploit(marker))
    path = tmp_path / "m.pkl"
    path.write_bytes(data[:16] + evil.ljust(length) + data[16 + length :])
    with pytest.raises(ModelError, match="truncated or not a model file .unreadable header"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a model file of this service"),
        (b"hello, not a model", "not a model file of this service"),
        (MAGIC + (10**9).to_bytes(8, "little") + b"{}", "header runs past the end"),
        (MAGIC + (2).to_bytes(8, "little") + b"{}", "not a model file of this service"),
        (MAGIC + (2).to_bytes(8, "little") + b"[]", "not a model file of this service"),
        (MAGIC + (5).to_bytes(8, "little") + b"nope!", "unreadable header"),
    ],
)
def test_broken_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "m.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "python als_fit.py" in str(info.value)
    assert "\n" not in str(info.value)


def test_another_format_version_is_refused(block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    header, _ = header_of(data)
    path = tmp_path / "m.pkl"
    path.write_bytes(with_header(data, {**header, "format_version": 3}))
    with pytest.raises(ModelError, match=f"has model format version 3, this service reads version {FORMAT_VERSION}"):
        load_model(path)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.01])
def test_a_file_cut_short_is_refused_before_anything_is_mapped(block_model_path, tmp_path, keep):
    """Mapping a cut file would raise SIGBUS on the first request that reads past its end."""
    data = block_model_path.read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="truncated"):
        load_model(path)


def test_an_array_past_the_end_is_refused_even_if_the_size_matches(block_model_path, tmp_path):
    data = block_model_path.read_bytes()
    header, _ = header_of(data)
    name = next(iter(header["arrays"]))
    header["arrays"][name]["shape"] = [10**7, 64]
    path = tmp_path / "m.pkl"
    path.write_bytes(with_header(data, header))
    with pytest.raises(ModelError, match=f"not a usable model file .array {name}: expected it inside the file"):
        load_model(path)


def test_missing_model_names_path_and_fix(tmp_path):
    with pytest.raises(ModelError, match=r"no model file at .*nope\.pkl; train one with: python als_fit\.py"):
        load_model(tmp_path / "nope.pkl")


def test_failed_save_leaves_previous_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.pkl"
    save_model(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_file.os, "fsync", boom)
    with pytest.raises(OSError):
        save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pkl"]  # no temp file left behind


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "m.pkl")
    with pytest.raises(ModelError, match="found a directory"):
        check_writable(tmp_path)


def test_warm_reads_every_page_of_the_file_within_its_bound(block_model_path):
    model = load_model(block_model_path)
    touched, total, seconds = warm(model, 60)
    assert total > 0 and touched == total and seconds < 60
    assert total <= block_model_path.stat().st_size
    assert warm(model, 0)[0] == 0  # no time: nothing touched
    assert warm(load_model(block_model_path), 0)[1] == total


def test_the_checksum_is_the_header_s_and_tells_two_trainings_apart(block_model_path, tmp_path):
    model = load_model(block_model_path)
    assert len(model.checksum) == 16 and int(model.checksum, 16) >= 0
    copy = tmp_path / "copy.pkl"
    copy.write_bytes(block_model_path.read_bytes())
    assert load_model(copy).checksum == model.checksum  # a copy is the same model
    model.metadata = {**model.metadata, "created_at": "2000-01-01T00:00:00+00:00"}
    save_model(model, tmp_path / "other.pkl")
    assert model.checksum == load_model(tmp_path / "other.pkl").checksum != load_model(copy).checksum

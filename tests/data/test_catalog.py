"""The streamer catalog file: what it gives, and one line naming the line for what it cannot."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.data.catalog import UNKNOWN, CatalogError, catalog_codes, read_catalog
from streamrec.model.model_file import load_model


def write(tmp_path, text: str | bytes):
    path = tmp_path / "streamers.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_columns_in_any_order_extras_ignored_blanks_unknown(tmp_path):
    path = write(
        tmp_path,
        "\ufefflanguage,followers,streamer_name,category\n"
        "en,5,alpha0,Just Chatting\n,7,alpha1,just chatting\nde,1,bravo0,\n\n",
    )
    catalog = read_catalog(path)
    assert catalog.entries == {
        "alpha0": ("Just Chatting", "en"),
        "alpha1": ("just chatting", None),
        "bravo0": (None, "de"),
    }


def test_codes_follow_the_models_rows_case_insensitively(tmp_path, block_model_path):
    model = load_model(block_model_path)
    path = write(
        tmp_path,
        "streamer_name,category,language\n"
        "alpha0,Just Chatting,en\nalpha1,JUST CHATTING,EN\nbravo0,Chess,de\nnobody,Chess,fr\n",
    )
    codes = catalog_codes(read_catalog(path), model.streamers)
    rows = model.streamers.rows(["alpha0", "alpha1", "bravo0", "bravo1"])
    assert codes.category[rows[0]] == codes.category[rows[1]] != codes.category[rows[2]]
    assert codes.language[rows[0]] == codes.language[rows[1]]
    assert codes.category[rows[3]] == codes.language[rows[3]] == UNKNOWN
    assert codes.categories == ("Just Chatting", "Chess") and codes.languages == ("en", "de")  # "fr": unknown streamer
    assert list(codes.wanted(["just chatting", "CHESS", "poker"], "category")) == [0, 1]
    assert len(codes.wanted(["fr"], "language")) == 0
    live = codes.with_values(rows[:1], ["Poker"], [None])
    assert live.categories[live.category[rows[0]]] == "Poker" and live.language[rows[0]] == codes.language[rows[0]]
    assert np.array_equal(codes.category, catalog_codes(read_catalog(path), model.streamers).category)  # unchanged


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "found an empty file"),
        (
            "name,category,language\na,b,c\n",
            "line 1: expected a header with streamer_name, category, language; missing streamer_name",
        ),
        ("streamer_name,category,language\na,b,c\nd,e\n", "line 3: expected 3 fields as in the header; found 2"),
        ("streamer_name,category,language\na,b,c\n,e,f\n", "line 3: expected a streamer_name; found an empty one"),
        (
            "streamer_name,category,language\na,b,c\nx,y,z\na,b,c\n",
            "line 4: expected each streamer once; found 'a' again",
        ),
        (b"streamer_name,category,language\na,caf\xe9,c\n", "expected UTF-8 text"),
    ],
)
def test_unusable_files_are_one_line_naming_the_line(tmp_path, text, message):
    with pytest.raises(CatalogError) as err:
        read_catalog(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "streamers.csv"))


def test_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="found no such file"):
        read_catalog(tmp_path / "none.csv")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("x" * 1025 + ",Chess,en", "line 2: expected a streamer_name of at most 1024 characters; found 1,025"),
        ("alpha0," + "c" * 129 + ",en", "line 2: expected a category of at most 128 characters; found 129"),
        ("alpha0,Chess," + "l" * 200, "line 2: expected a language of at most 128 characters; found 200"),
    ],
)
def test_values_longer_than_a_filter_can_ask_for_are_refused(tmp_path, line, expected):
    with pytest.raises(CatalogError, match=expected):
        read_catalog(write(tmp_path, f"streamer_name,category,language\n{line}\n"))


def test_a_catalog_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    from streamrec.data import catalog

    monkeypatch.setattr(catalog, "MAX_CATALOG_BYTES", 100)
    path = write(tmp_path, "streamer_name,category,language\n" + "alpha0,Chess,en\n" * 10)
    with pytest.raises(CatalogError, match="expected a streamer catalog of at most 100 bytes; found 192"):
        read_catalog(path)

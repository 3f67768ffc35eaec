"""The streamer catalog: each streamer's usual category and language (`STREAMERS_PATH`).

    streamer_name,category,language
    viridetv,Just Chatting,en
    fubelo,League of Legends,de

A CSV with a header naming at least `streamer_name`, `category` and `language` (any order, other
columns ignored; an empty cell means unknown). A stream's category changes from one stream to
the next, so what a live set publishes for a live streamer wins over this file (`serve/live.py`).
A file that cannot be used raises CatalogError with one line naming the file and the line.

Values are matched case-insensitively: each category and language is kept as first written and
coded by its lower-case form, so "just chatting" and "Just Chatting" are one category.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from streamrec.data.interactions import IdMap

REQUIRED = ("streamer_name", "category", "language")
UNKNOWN = -1  # the code of a streamer whose category (or language) is not known
# Bounds on what a catalog file or a live set may hold (a Twitch login is at most 25 characters,
# the longest category names about 60); the category= and language= filters take values as long.
MAX_NAME_LENGTH = 1024
MAX_VALUE_LENGTH = 128
MAX_CATALOG_BYTES = 1 << 30  # 1 GiB: a catalog of 1.5M streamers is about 50 MB


class CatalogError(ValueError):
    """The catalog file cannot be used; the message is one line meant for a person."""


@dataclass(frozen=True)
class Catalog:
    """streamer name -> (category, language), either None when unknown."""

    entries: dict[str, tuple[str | None, str | None]]
    path: str = ""

    def __len__(self) -> int:
        return len(self.entries)


def read_catalog(path: str | Path) -> Catalog:
    """Read a catalog file; raises CatalogError naming the line of the first problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CATALOG_BYTES:
            raise CatalogError(
                f"{path}: expected a streamer catalog of at most {MAX_CATALOG_BYTES:,} bytes; found {size:,}"
            )
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise CatalogError(f"{path}: expected a header with {', '.join(REQUIRED)}; found an empty file")
            names = [h.strip().lower() for h in header]
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise CatalogError(
                    f"{path}, line 1: expected a header with {', '.join(REQUIRED)}; "
                    f"missing {', '.join(missing)} (found {', '.join(names)})"
                )
            at = {c: names.index(c) for c in REQUIRED}
            entries: dict[str, tuple[str | None, str | None]] = {}
            for record in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in record):
                    continue
                if len(record) != len(header):
                    raise CatalogError(
                        f"{path}, line {line}: expected {len(header)} fields as in the header; found {len(record)}"
                    )
                name = record[at["streamer_name"]].strip()
                if not name:
                    raise CatalogError(f"{path}, line {line}: expected a streamer_name; found an empty one")
                if name in entries:
                    raise CatalogError(f"{path}, line {line}: expected each streamer once; found {name!r} again")
                category = record[at["category"]].strip() or None
                language = record[at["language"]].strip() or None
                long = [
                    (c, v)
                    for c, v in (("streamer_name", name), ("category", category), ("language", language))
                    if v is not None and len(v) > (MAX_NAME_LENGTH if c == "streamer_name" else MAX_VALUE_LENGTH)
                ]
                if long:
                    column, value = long[0]
                    cap = MAX_NAME_LENGTH if column == "streamer_name" else MAX_VALUE_LENGTH
                    raise CatalogError(
                        f"{path}, line {line}: expected a {column} of at most {cap} characters; found {len(value):,}"
                    )
                entries[name] = (category, language)
    except FileNotFoundError:
        raise CatalogError(f"{path}: expected a streamer catalog CSV; found no such file") from None
    except IsADirectoryError:
        raise CatalogError(f"{path}: expected a streamer catalog CSV; found a directory") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: expected UTF-8 text; found undecodable bytes at byte {exc.start}") from None
    except csv.Error as exc:
        raise CatalogError(f"{path}, line {reader.line_num}: expected well-formed CSV; found {exc}") from None
    return Catalog(entries, str(path))


@dataclass(frozen=True)
class Codes:
    """Per streamer row of one model: the code of its category and of its language (UNKNOWN if
    not known), and the values behind the codes (as first written; codes index them)."""

    category: np.ndarray  # int32 per streamer row
    language: np.ndarray  # int32 per streamer row
    categories: tuple[str, ...]
    languages: tuple[str, ...]

    @classmethod
    def empty(cls, n_streamers: int) -> Codes:
        unknown = np.full(n_streamers, UNKNOWN, dtype=np.int32)
        return cls(unknown, unknown.copy(), (), ())

    def with_values(self, rows: np.ndarray, categories: list[str | None], languages: list[str | None]) -> Codes:
        """These codes with `rows` given the values at their positions (None: left as they are)."""
        category, cats = _assign(self.category, self.categories, rows, categories)
        language, langs = _assign(self.language, self.languages, rows, languages)
        return Codes(category, language, cats, langs)

    def wanted(self, values: list[str], kind: str) -> tuple[int, ...]:
        """The codes of `values` (case-insensitive) among this kind's ("category" or "language"),
        sorted; values no streamer has are left out."""
        known = self.category_index if kind == "category" else self.language_index
        if len(values) == 1:  # the usual request
            code = known.get(values[0].lower())
            return () if code is None else (code,)
        return tuple(sorted({code for code in map(known.get, (v.lower() for v in values)) if code is not None}))

    @cached_property
    def category_index(self) -> dict[str, int]:
        return {v.lower(): i for i, v in enumerate(self.categories)}

    @cached_property
    def language_index(self) -> dict[str, int]:
        return {v.lower(): i for i, v in enumerate(self.languages)}


def _assign(
    codes: np.ndarray, vocabulary: tuple[str, ...], rows: np.ndarray, values: list[str | None]
) -> tuple[np.ndarray, tuple[str, ...]]:
    out = codes.copy()
    vocab = list(vocabulary)
    index = {v.lower(): i for i, v in enumerate(vocab)}
    for row, value in zip(rows.tolist(), values, strict=True):
        if row < 0 or value is None:
            continue
        key = value.lower()
        if key not in index:
            index[key] = len(vocab)
            vocab.append(value)
        out[row] = index[key]
    return out, tuple(vocab)


def catalog_codes(catalog: Catalog | None, streamers: IdMap) -> Codes:
    """The catalog's categories and languages for a model's streamer rows; streamers the model
    does not know are left out, streamers the catalog does not list are UNKNOWN."""
    codes = Codes.empty(len(streamers))
    if catalog is None or not len(catalog):
        return codes
    names = list(catalog.entries)
    rows = streamers.rows(names)
    values = list(catalog.entries.values())
    return codes.with_values(rows, [c for c, _ in values], [lang for _, lang in values])

"""Category and language filters: what one lets through, gathered once, kept in a cache bounded by bytes.

    cache = FilterCache(budget_bytes=32 << 20)
    passing = cache.get(key, lambda: gather(model, codes, key, rows, order))

A filter is known by the codes it allows (`FilterKey`), never by the text asked: values that no
streamer has map to no code, so `?language=en,junk1` and `?language=en,junk2` are one entry and a
request of junk makes none of its own. What a filter lets through is a bool per category and
language code (`Filter`), not a bool per streamer, so the part of an entry that grows with the
catalog is only what ranking needs: the factors of the streamers that pass, and the first
POPULAR_HEAD of them by popularity. Live-only requests have entries of their own, gathered from the
live set when the first such request comes. The cache drops the least recently used entries
when a new one would take it past its budget (FILTER_CACHE_MB).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamrec.data.catalog import Codes
from streamrec.model.recommender import Candidates, Recommender

POPULAR_HEAD = 4096  # streamers that pass kept in popularity order: k (<= 100) plus what a list may skip
SCAN = 1 << 16  # popularity order scanned per step while gathering the head
ENTRY_OVERHEAD = 2048  # bytes an entry costs beyond its arrays (objects, the key, the dict slot)

# (category codes allowed, or None for no category filter; the same for languages; live-only)
FilterKey = tuple[tuple[int, ...] | None, tuple[int, ...] | None, bool]


def filter_key(codes: Codes, categories: list[str], languages: list[str], live: bool) -> FilterKey:
    return (
        codes.wanted(categories, "category") if categories else None,
        codes.wanted(languages, "language") if languages else None,
        live,
    )


@dataclass(frozen=True)
class Filter:
    """Which streamers pass, as a bool per category and per language code; indexed by streamer
    rows like a bool mask (`filter[rows]`). A streamer whose category (language) is unknown never
    passes a category (language) filter: code -1 reads the tables' last slot, always False."""

    codes: Codes
    categories: np.ndarray | None  # bool per category code, one more (False) for unknown
    languages: np.ndarray | None

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        # As few numpy calls as can be: this runs on every filtered request, on a few dozen rows.
        categories, languages = self.categories, self.languages
        if languages is None:
            assert categories is not None, "a filter filters on something"
            return categories[self.codes.category[rows]]
        if categories is None:
            return languages[self.codes.language[rows]]
        return categories[self.codes.category[rows]] & languages[self.codes.language[rows]]

    @classmethod
    def of(cls, codes: Codes, key: FilterKey) -> Filter:
        def table(allowed: tuple[int, ...] | None, n: int) -> np.ndarray | None:
            if allowed is None:
                return None
            out = np.zeros(n + 1, dtype=bool)
            out[list(allowed)] = True
            return out

        return cls(codes, table(key[0], len(codes.categories)), table(key[1], len(codes.languages)))


@dataclass(frozen=True)
class Passing:
    """What one filter lets through among the catalog (or the live set), gathered for ranking."""

    mask: Filter
    candidates: Candidates  # the streamers that pass, with their factors
    head: np.ndarray  # the first POPULAR_HEAD streamers of `order` that pass
    complete: bool  # whether `head` holds every streamer of `order` that passes
    order: np.ndarray  # the popularity order the head was taken from (shared, not this entry's)
    share: float  # of the streamers gathered from, the share that passes

    def popular(self, need: int) -> np.ndarray:
        """Streamers that pass in popularity order, at least `need` of them where there are: the
        head, or (rarely: a long list to skip) the whole order filtered now and not kept."""
        if self.complete or len(self.head) >= need:
            return self.head
        return self.order[self.mask[self.order]]

    @property
    def nbytes(self) -> int:
        c = self.candidates
        tables = sum(t.nbytes for t in (self.mask.categories, self.mask.languages) if t is not None)
        arrays = c.rows.nbytes + c.factors.nbytes + sum(p.nbytes for p in c.pop.values()) + self.head.nbytes
        return arrays + tables + ENTRY_OVERHEAD


def gather(model: Recommender, codes: Codes, key: FilterKey, rows: np.ndarray, order: np.ndarray) -> Passing:
    """What filter `key` lets through of `rows` (sorted streamer rows: the catalog, or the live
    set) and of `order` (a popularity order of them)."""
    mask = Filter.of(codes, key)
    passing = rows[mask[rows]]
    head, found, complete = [], 0, True
    for lo in range(0, len(order), SCAN):  # the most popular first: a common filter stops early
        block = order[lo : lo + SCAN]
        head.append(block[mask[block]][: POPULAR_HEAD - found])
        found += len(head[-1])
        if found >= POPULAR_HEAD:
            complete = False  # maybe more pass further on: popular() filters the whole order if asked
            break
    return Passing(
        mask=mask,
        candidates=model.candidates(passing),
        head=np.concatenate(head) if head else order[:0],
        complete=complete,
        order=order,
        share=len(passing) / len(rows) if len(rows) else 0.0,
    )


class FilterCache:
    """Passing entries by FilterKey, least recently used dropped first, at most `budget` bytes.
    An entry larger than the whole budget is used for its request and not kept. Used from the
    event loop only (the routes that filter are async), so it needs no lock."""

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self._entries: OrderedDict[FilterKey, Passing] = OrderedDict()

    def get(self, key: FilterKey, build: Callable[[], Passing]) -> Passing:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        found = build()
        size = found.nbytes
        if size <= self.budget:
            while self._entries and self.bytes + size > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes
            self._entries[key] = found
            self.bytes += size
        return found

    def __len__(self) -> int:
        return len(self._entries)

"""What a model file must be before any of it is used: the header's types and the arrays' structure.

    header = parse_header(text)              # JSON without NaN or Infinity, typed (pydantic)
    check_layout(header, header_end, size)   # aligned, in the file, no two arrays overlapping
    check_arrays(header, arrays)             # shapes agree, indices in range, floats finite

`model_file.load_model` runs all three on every load (startup and every reload), so that a file
that passes can be served without a request ever finding a NaN, an index out of range or a
half-swapped model. Each failure is a ValueError whose message is one line naming what was
expected and what was found; the loader adds the path.

What is checked, and why it is enough: every index array that serving follows (CSR pointers and
columns, id maps, stored lists, the popularity order, the catalog) is in range and ordered as the
code assumes (bisection needs sorted keys and columns); every float that can reach an answer
(factors, history terms, stored scores, popularity, ranker weights) is finite and bounded so that
a product of them stays finite. Values that only change which streamers come first are not
checked: a file can be wrong without being unsafe. There is no checksum of the arrays: at a
million viewers hashing the 1.5 GB file costs seconds per worker, and every byte it would vouch
for is either checked here or only orders streamers.

Cost on the 1M-viewer model (1.5 GB): see README, "When things go wrong". The element checks are
min/max reductions over the mapped arrays (no temporaries) or run in blocks of a few MB.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamrec.data.interactions import STRENGTHS
from streamrec.model.ranking import FEATURES, RankerName

ALIGN = 4096  # arrays start on page boundaries: a page never holds two arrays
MAX_HEADER_BYTES = 16 << 20  # a 1M-viewer model's header is a few kB; metadata may add some
MAX_DEPTH = 32  # nesting of the header's JSON (metadata included)
MAX_DIM = 1 << 40
MAX_FACTOR = 1e4  # |ALS factor| bound: trained factors are below 10; a product of 4,096 stays finite
MAX_WEIGHT = 1e9  # |ranker weight| bound on raw features, and on every stored float term
DTYPES = ("uint8", "int32", "int64", "uint32", "float32", "float64")
INDEX = ("int32", "int64")
FLOAT = ("float32", "float64")
BLOCK = 1 << 22  # elements per block of a check that needs a temporary


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one line: where, what was expected, what was found; and how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".") or "the value"
    found = first.get("input")
    found = repr(found) if not isinstance(found, dict | list) else type(found).__name__
    if len(found) > 60:
        found = found[:57] + "..."
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}; found {found}{more}"


# --- the header ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


Finite = Annotated[float, Field(ge=-MAX_WEIGHT, le=MAX_WEIGHT)]
Weights = Annotated[list[Finite], Field(min_length=len(FEATURES), max_length=len(FEATURES))]


class ArraySpec(_Strict):
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    shape: Annotated[list[Annotated[int, Field(ge=0, le=MAX_DIM)]], Field(min_length=1, max_length=2)]
    offset: Annotated[int, Field(ge=0, le=1 << 50)]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize  # Python ints: never wraps


class AlsSpec(_Strict):
    factors: Annotated[int, Field(ge=1, le=4096)]
    regularization: Annotated[float, Field(ge=0, le=1e6)]
    alpha: Annotated[float, Field(ge=0, le=1e6)]
    iterations: Annotated[int, Field(ge=0, le=100_000)]
    random_state: Annotated[int, Field(ge=0, le=2**32 - 1)] | None


class RankerSpec(_Strict):
    mean: Weights
    scale: Weights
    coef: Weights
    bias: Finite
    learned: bool
    watched_shift: Weights | None = None


class Metadata(BaseModel):
    """What serving reads of the metadata is typed; the rest is free JSON (training facts)."""

    model_config = ConfigDict(strict=True, extra="allow")
    created_at: str | None = None
    source: str | None = None
    time_format: str | None = None


class Header(_Strict):
    format: str
    format_version: int
    file_size: int
    metadata: Metadata
    als: AlsSpec
    time_max: Annotated[int, Field(ge=-(2**53), le=2**53)]
    time_span: Annotated[int, Field(ge=1, le=2**54)]
    strength: Literal[tuple(STRENGTHS)]  # type: ignore[valid-type]
    rankers: dict[str, RankerSpec]
    lists: list[str]
    arrays: dict[str, ArraySpec]


def _no_constant(name: str) -> Any:
    raise ValueError(f"expected finite numbers; found {name}")


def parse_header(text: bytes) -> dict:
    """The header's JSON as a dict; NaN, Infinity and nesting deeper than MAX_DEPTH refused."""
    try:
        header = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"expected JSON nested at most {MAX_DEPTH} deep; found deeper") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"expected UTF-8 JSON; found undecodable bytes at byte {exc.start}") from None
    depth, stack = 0, [(header, 1)]
    while stack:
        value, level = stack.pop()
        depth = max(depth, level)
        if depth > MAX_DEPTH:
            raise ValueError(f"expected JSON nested at most {MAX_DEPTH} deep; found deeper")
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return header


def typed_header(header: dict) -> Header:
    """The header checked against its schema (format and version already checked)."""
    try:
        typed = Header.model_validate(header)
    except ValidationError as exc:
        raise ValueError(f"header field {one_line(exc)}") from None
    if typed.metadata.created_at is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(typed.metadata.created_at)
        except ValueError:
            raise ValueError(
                f"header field metadata.created_at: expected an ISO 8601 time; found {typed.metadata.created_at[:40]!r}"
            ) from None
    missing = [name for name in (RankerName.ALL, RankerName.NEW) if name not in typed.rankers]
    if missing or set(typed.rankers) - set(RankerName):
        raise ValueError(f"header field rankers: expected all, new and maybe live; found {', '.join(typed.rankers)}")
    if not {RankerName.ALL, RankerName.NEW} <= set(typed.lists) <= set(typed.rankers) or len(set(typed.lists)) != len(
        typed.lists
    ):
        raise ValueError(f"header field lists: expected all and new (rankers' names); found {typed.lists}")
    for name, ranker in typed.rankers.items():
        scale = np.asarray(ranker.scale)
        if not (np.abs(scale) >= 1e-9).all():
            raise ValueError(f"header field rankers.{name}.scale: expected no zero; found {ranker.scale}")
        w = np.asarray(ranker.coef) / scale
        c = ranker.bias - np.asarray(ranker.mean) @ w
        if not (np.isfinite(c) and np.abs(w).max() <= MAX_WEIGHT and abs(c) <= MAX_WEIGHT):
            raise ValueError(f"header field rankers.{name}: expected weights within {MAX_WEIGHT:g}; found larger")
    return typed


# --- where the arrays are -------------------------------------------------------------------------

FIXED = {  # name -> allowed dtypes and number of dimensions
    "user_factors": (("float32",), 2),
    "item_factors": (("float32",), 2),
    "history.indptr": (INDEX, 1),
    "history.indices": (INDEX, 1),
    "history.count": (FLOAT, 1),
    "history.watch_time": (FLOAT, 1),
    "history.last_seen": (FLOAT, 1),
    "history.bonus": (("float32",), 1),
    "history.live_bonus": (("float32",), 1),
    "popularity": (FLOAT, 1),
    "popular_ranking": (INDEX, 1),
    "catalog": (INDEX, 1),
    "best_als": (FLOAT, 1),
    "streamer_json.blob": (("uint8",), 1),
    "streamer_json.offsets": (INDEX, 1),
    **{
        f"{side}.{name}": (dtypes, 1)
        for side in ("users", "streamers")
        for name, dtypes in (("blob", ("uint8",)), ("offsets", INDEX), ("keys", ("uint32",)), ("order", INDEX))
    },
}
OPTIONAL = {"history.recent": (FLOAT, 1), "history.decayed": (FLOAT, 1), "pop_feature": (("float32",), 1)}


def expected_arrays(header: Header) -> dict[str, tuple[tuple[str, ...], int]]:
    expected = dict(FIXED)
    for name in header.lists:
        expected[f"lists.{name}.ids"] = (INDEX, 2)
        expected[f"lists.{name}.scores"] = (("float32",), 2)
    return expected


def check_layout(header: Header, header_end: int, size: int) -> None:
    """Every array named, typed, on a page boundary, inside the file, and no two overlapping."""
    expected = expected_arrays(header)
    own = {f"history.own.{name}" for name in header.rankers}
    for name, spec in header.arrays.items():
        allowed = expected.get(name) or OPTIONAL.get(name) or ((("float32",), 1) if name in own else None)
        if allowed is None:
            raise ValueError(f"array {name}: expected only the arrays of this format; found one it does not have")
        dtypes, ndim = allowed
        if spec.dtype not in dtypes or len(spec.shape) != ndim:
            raise ValueError(
                f"array {name}: expected {' or '.join(dtypes)} with {ndim} dimension(s); "
                f"found {spec.dtype} of shape {spec.shape}"
            )
    missing = sorted(set(expected) - set(header.arrays))
    if missing:
        raise ValueError(f"arrays: expected {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; found none")
    end = header_end
    for name, spec in sorted(header.arrays.items(), key=lambda item: item[1].offset):
        if spec.offset % ALIGN or spec.offset < end:
            raise ValueError(
                f"array {name}: expected an offset on a {ALIGN}-byte boundary at or after byte {end:,}; "
                f"found {spec.offset:,} (arrays overlap or are misaligned)"
            )
        end = spec.offset + spec.nbytes
        if end > size:
            raise ValueError(f"array {name}: expected it inside the file ({size:,} bytes); found it ending at {end:,}")


# --- what the arrays hold -------------------------------------------------------------------------


def _blocks(n: int, size: int = BLOCK):
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def _need(ok: bool, name: str, expected: str, found: str) -> None:
    if not ok:
        raise ValueError(f"array {name}: expected {expected}; found {found}")


def _shape(a: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> None:
    _need(a[name].shape == shape, name, f"shape {list(shape)}", f"{list(a[name].shape)}")


def _floats(a: dict[str, np.ndarray], name: str, bound: float, low: float | None = None) -> None:
    """Finite and within [-bound, bound] (or [low, bound]): min and max propagate NaN, no temporary."""
    x = a[name]
    if not x.size:
        return
    lo, hi = float(x.min()), float(x.max())
    floor = -bound if low is None else low
    _need(
        math.isfinite(lo) and math.isfinite(hi) and lo >= floor and hi <= bound,
        name,
        f"finite numbers in [{floor:g}, {bound:g}]",
        f"values from {lo:g} to {hi:g}",
    )


def _in_range(a: dict[str, np.ndarray], name: str, low: int, high: int) -> None:
    """Integers in [low, high)."""
    x = a[name]
    if not x.size:
        return
    lo, hi = int(x.min()), int(x.max())
    _need(low <= lo and hi < high, name, f"values in [{low:,}, {high:,})", f"values from {lo:,} to {hi:,}")


def _pointers(a: dict[str, np.ndarray], name: str, n: int, end: int) -> None:
    """Offsets of n runs: n + 1 of them, from 0 to `end`, never decreasing."""
    p = a[name]
    _shape(a, name, (n + 1,))
    _need(int(p[0]) == 0 and int(p[-1]) == end, name, f"offsets from 0 to {end:,}", f"{int(p[0]):,} to {int(p[-1]):,}")
    for s in _blocks(n):
        _need(bool((p[s.start + 1 : s.stop + 1] >= p[s]).all()), name, "offsets never decreasing", "a decrease")


def _utf8_runs(a: dict[str, np.ndarray], side: str, n: int) -> None:
    """An id map's blob: UTF-8 (lone surrogates allowed, as written), each id starting on a character."""
    blob, offsets = a[f"{side}.blob"], a[f"{side}.offsets"]
    _pointers(a, f"{side}.offsets", n, len(blob))
    try:
        bytes(blob).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"array {side}.blob: expected UTF-8 text; found undecodable bytes at byte {exc.start:,}"
        ) from None
    for s in _blocks(n):
        starts = offsets[s]
        starts = starts[starts < len(blob)]
        _need(
            bool(((blob[starts] & 0xC0) != 0x80).all()), f"{side}.offsets", "ids starting on a character", "one inside"
        )


def _id_map(a: dict[str, np.ndarray], side: str, n: int) -> None:
    _utf8_runs(a, side, n)
    _shape(a, f"{side}.keys", (n,))
    _shape(a, f"{side}.order", (n,))
    _in_range(a, f"{side}.order", 0, max(n, 1))
    keys = a[f"{side}.keys"]
    for s in _blocks(max(n - 1, 0)):
        _need(bool((keys[s.start + 1 : s.stop + 1] >= keys[s]).all()), f"{side}.keys", "sorted keys", "unsorted")


def _permutation(a: dict[str, np.ndarray], name: str, n: int) -> None:
    _shape(a, name, (n,))
    _in_range(a, name, 0, max(n, 1))
    if n:
        _need(bool((np.bincount(a[name], minlength=n) == 1).all()), name, "each streamer once", "repeats")


def _columns(a: dict[str, np.ndarray], n_users: int, n_streamers: int) -> None:
    """history.indices: in range, strictly increasing within each viewer's row (lookups bisect)."""
    indptr, indices = a["history.indptr"], a["history.indices"]
    _in_range(a, "history.indices", 0, max(n_streamers, 1))
    row_start = np.zeros(len(indices), dtype=bool)
    row_start[indptr[:-1][indptr[:-1] < len(indices)]] = True
    for s in _blocks(max(len(indices) - 1, 0)):
        up = indices[s.start + 1 : s.stop + 1] > indices[s]
        _need(bool((up | row_start[s.start + 1 : s.stop + 1]).all()), "history.indices", "sorted rows", "unsorted")


def _lists(a: dict[str, np.ndarray], name: str, n_users: int, n_streamers: int) -> None:
    """A stored list: ids in range, padding (-1) only at the end of a row, finite scores before it."""
    ids, scores = a[f"lists.{name}.ids"], a[f"lists.{name}.scores"]
    _need(
        ids.shape[0] == n_users and ids.shape == scores.shape,
        f"lists.{name}.ids",
        f"{n_users:,} rows, as many as the scores",
        f"shape {list(ids.shape)} and {list(scores.shape)}",
    )
    _in_range(a, f"lists.{name}.ids", -1, max(n_streamers, 1))
    rows = max(1, BLOCK // max(ids.shape[1], 1))
    for s in _blocks(n_users, rows):
        valid = ids[s] >= 0
        _need(bool((valid[:, 1:] <= valid[:, :-1]).all()), f"lists.{name}.ids", "padding at the end", "inside")
        held = scores[s][valid]
        if held.size:
            lo, hi = float(held.min()), float(held.max())
            _need(
                math.isfinite(lo) and math.isfinite(hi),
                f"lists.{name}.scores",
                "finite scores",
                f"values from {lo:g} to {hi:g}",
            )


def check_arrays(header: Header, a: dict[str, np.ndarray]) -> None:
    """Every array's shape against the others, and every value serving follows or answers with."""
    n_users, factors = a["user_factors"].shape
    n_streamers = a["item_factors"].shape[0]
    f = header.als.factors
    _shape(a, "user_factors", (n_users, f))
    _shape(a, "item_factors", (n_streamers, f))
    _need(
        len(a["users.offsets"]) == n_users + 1,
        "users.offsets",
        f"{n_users + 1:,} offsets (one per viewer row + 1)",
        f"{len(a['users.offsets']):,}",
    )
    _need(
        len(a["streamers.offsets"]) == n_streamers + 1,
        "streamers.offsets",
        f"{n_streamers + 1:,} offsets (one per streamer row + 1)",
        f"{len(a['streamers.offsets']):,}",
    )
    _floats(a, "user_factors", MAX_FACTOR)
    _floats(a, "item_factors", MAX_FACTOR)
    nnz = len(a["history.indices"])
    _pointers(a, "history.indptr", n_users, nnz)
    _columns(a, n_users, n_streamers)
    per_entry = ["history.count", "history.watch_time", "history.last_seen", "history.bonus", "history.live_bonus"]
    per_entry += [name for name in a if name.startswith(("history.own.", "history.recent", "history.decayed"))]
    for name in per_entry:
        _shape(a, name, (nnz,))
        _floats(a, name, 2.0**53 if name == "history.last_seen" else MAX_WEIGHT)
    _shape(a, "popularity", (n_streamers,))
    _floats(a, "popularity", MAX_WEIGHT, low=0.0)
    if "pop_feature" in a:
        _shape(a, "pop_feature", (n_streamers,))
        _floats(a, "pop_feature", 1.0, low=0.0)
    _permutation(a, "popular_ranking", n_streamers)
    catalog = a["catalog"]
    _in_range(a, "catalog", 0, max(n_streamers, 1))
    _need(bool((catalog[1:] > catalog[:-1]).all()), "catalog", "sorted distinct streamer rows", "unsorted or repeats")
    _shape(a, "best_als", (n_users,))
    _floats(a, "best_als", MAX_WEIGHT)
    _id_map(a, "users", n_users)
    _id_map(a, "streamers", n_streamers)
    _pointers(a, "streamer_json.offsets", n_streamers, len(a["streamer_json.blob"]))
    for name in header.lists:
        _lists(a, name, n_users, n_streamers)

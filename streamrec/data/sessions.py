"""Read a viewing-sessions CSV into a clean table, or say exactly why it cannot be read.

    python -m streamrec.data.sessions sessions.csv         # print what would be trained on

Two layouts are accepted and told apart by the first line:
- a header naming `uid, session_id, streamer_name, time_start, time_end` (any order, extra
  columns ignored);
- the public Twitch dataset (`100k_a.csv`, `full_a.csv.gz`): no header, those five columns in
  that order, times as integer 10-minute crawl rounds.
Times are integers (any unit) or ISO-8601 timestamps (kept as epoch seconds, naive ones read as
UTC). Gzip input is detected by its magic bytes, whatever the file is called.

Rows that cannot be used are dropped and counted by reason; anything that makes the whole file
unusable raises `DataError` with one line naming the file, what was expected and what was found.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

UID, SESSION, STREAMER, START, END = COLUMNS = (
    "uid",
    "session_id",
    "streamer_name",
    "time_start",
    "time_end",
)
INTEGER, ISO = "integer", "iso8601"  # the two time formats
GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 64 * 1024
MAX_TIME = 2**53  # integer times beyond this are not exact in float64 and not plausible


class DataError(ValueError):
    """The input cannot be trained on; the message is one line meant for a person."""


@dataclass
class Sessions:
    """Usable sessions: `frame` has uid and streamer_name as str, times as int64."""

    frame: pd.DataFrame
    path: str
    layout: str  # "header" or "twitch (no header)"
    time_format: str  # INTEGER or ISO (epoch seconds)
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    @property
    def rows_used(self) -> int:
        return len(self.frame)

    def drop_summary(self) -> str:
        return drop_summary(self.dropped)


def drop_summary(dropped: dict[str, int]) -> str:
    """One line for the rows dropped, by reason."""
    if not dropped:
        return "dropped 0 rows"
    parts = "; ".join(f"{n:,} {reason}" for reason, n in dropped.items())
    return f"dropped {sum(dropped.values()):,} rows: {parts}"


def _undecodable(path: Path, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}: expected UTF-8 text; found undecodable bytes ({exc.reason} at byte {exc.start})")


def _open_text(path: Path) -> io.TextIOBase:
    """Open plain or gzip text as UTF-8, after checking the file looks like text."""
    with open(path, "rb") as raw:
        head = raw.read(_SNIFF_BYTES)
    opener = gzip.open if head.startswith(GZIP_MAGIC) else open
    if opener is gzip.open:
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(_SNIFF_BYTES)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: expected gzip-compressed CSV; found a broken gzip stream ({exc})") from None
    if b"\x00" in head:
        raise DataError(f"{path}: expected a text CSV; found binary data (NUL bytes in the first {len(head):,} bytes)")
    # utf-8-sig: files saved by spreadsheet tools often start with a byte-order mark.
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def first_record(path: Path) -> tuple[list[str], int]:
    """The first non-blank CSV record and how many lines it took to reach its end."""
    with _open_text(path) as text:
        try:
            reader = csv.reader(text)
            for record in reader:
                if any(cell.strip() for cell in record):
                    return record, reader.line_num
        except UnicodeDecodeError as exc:
            raise _undecodable(path, exc) from None
        except csv.Error as exc:
            raise DataError(f"{path}: expected CSV; found {exc}") from None
    raise DataError(f"{path}: expected CSV rows of {','.join(COLUMNS)}; found an empty file")


def _looks_like_time(cell: str) -> bool:
    cell = cell.strip()
    if cell.lstrip("-").isdigit():
        return True
    return not pd.isna(pd.to_datetime(cell, format="ISO8601", errors="coerce", utc=True))


def detect_layout(path: Path, first: list[str]) -> tuple[str, dict[str, int]]:
    """(layout, position of each required column) from the first record."""
    names = [cell.strip().lower() for cell in first]
    found = [c for c in COLUMNS if c in names]
    if len(found) == len(COLUMNS):
        return "header", {c: names.index(c) for c in COLUMNS}
    if found:
        missing = ", ".join(c for c in COLUMNS if c not in names)
        raise DataError(f"{path}: header is missing column(s) {missing}; found columns {', '.join(names)}")
    if len(first) == len(COLUMNS) and _looks_like_time(first[3]) and _looks_like_time(first[4]):
        return "twitch (no header)", {c: i for i, c in enumerate(COLUMNS)}
    shown = ",".join(first)[:120]
    raise DataError(
        f"{path}: expected a header with {','.join(COLUMNS)} or headerless rows of those five "
        f"columns; found first line {shown!r}"
    )


def _lines(index: pd.Index, first_line: int, limit: int = 3) -> str:
    """File line numbers of data rows (exact unless quoted fields hold newlines)."""
    shown = ", ".join(str(i + first_line) for i in index[:limit])
    return shown + (", ..." if len(index) > limit else "")


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    # Independent of the datetime resolution pandas picked (s, ms, us or ns).
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "s")).to_numpy(dtype=np.int64)


def _parse_times(frame: pd.DataFrame, path: Path, first_line: int) -> tuple[pd.DataFrame, str, np.ndarray]:
    """Convert both time columns to int64; return (frame, format, rows whose times failed)."""
    start_txt, end_txt = frame[START].str.strip(), frame[END].str.strip()
    start_int = pd.to_numeric(start_txt, errors="coerce")
    end_int = pd.to_numeric(end_txt, errors="coerce")
    is_int = (start_int.notna() & end_int.notna()).to_numpy()
    # Integers must be whole numbers ("1.5" is not a time step) that int64 holds exactly.
    if is_int.any():
        whole = ((start_int % 1 == 0) & (end_int % 1 == 0)).to_numpy()
        in_range = ((start_int.abs() <= MAX_TIME) & (end_int.abs() <= MAX_TIME)).to_numpy()
        is_int = is_int & whole & in_range
    if is_int.all():
        return (
            frame.assign(**{START: start_int.astype("int64"), END: end_int.astype("int64")}),
            INTEGER,
            np.zeros(len(frame), bool),
        )

    rest = ~is_int
    start_ts = pd.to_datetime(start_txt[rest], format="ISO8601", errors="coerce", utc=True)
    end_ts = pd.to_datetime(end_txt[rest], format="ISO8601", errors="coerce", utc=True)
    is_iso = np.zeros(len(frame), bool)
    is_iso[rest] = (start_ts.notna() & end_ts.notna()).to_numpy()
    n_int, n_iso = int(is_int.sum()), int(is_iso.sum())
    if n_int and n_iso:
        raise DataError(
            f"{path}: expected one time format; found {n_int:,} rows with integer times and "
            f"{n_iso:,} with ISO-8601 timestamps (e.g. lines {_lines(frame.index[is_iso], first_line)})"
        )
    if n_int:
        bad = ~is_int
        out = frame.assign(**{START: start_int.fillna(0).astype("int64"), END: end_int.fillna(0).astype("int64")})
        return out, INTEGER, bad
    bad = ~is_iso
    seconds_start = np.zeros(len(frame), np.int64)
    seconds_end = np.zeros(len(frame), np.int64)
    ok = is_iso[rest]
    seconds_start[np.flatnonzero(rest)[ok]] = _epoch_seconds(start_ts[ok])
    seconds_end[np.flatnonzero(rest)[ok]] = _epoch_seconds(end_ts[ok])
    return frame.assign(**{START: seconds_start, END: seconds_end}), ISO, bad


# Typed reads tried in order: exports with integer ids and times (the Twitch file) parse at C
# speed; anything else falls through to reading text and parsing it here.
_ATTEMPTS = (
    {SESSION: "int64", START: "int64", END: "int64"},
    {SESSION: str, START: "int64", END: "int64"},
    {SESSION: str, START: str, END: str},
)


def _read_frame_arrow(path: Path, layout: str, positions: dict[str, int], skip: int) -> pd.DataFrame | None:
    """The fast path: pyarrow's multithreaded CSV reader. Ids come back as categoricals (one
    string per distinct id, as the clean frame keeps them), dictionary-encoded by Arrow, so no
    per-row Python string is ever made. None when the file is anything but plain, well-formed
    UTF-8 CSV of the expected types: the pandas path below then reads it again and, if the file
    is broken, says exactly how."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, "rb") as raw:
        compression = "gzip" if raw.read(2) == GZIP_MAGIC else None
    wanted = (UID, STREAMER, START, END)
    for times in (pa.int64(), pa.string()):
        types = {UID: pa.string(), STREAMER: pa.string(), START: times, END: times}
        try:
            with pa.input_stream(str(path), compression=compression) as stream:
                table = pacsv.read_csv(
                    stream,
                    read_options=pacsv.ReadOptions(skip_rows=skip, autogenerate_column_names=True),
                    parse_options=pacsv.ParseOptions(newlines_in_values=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types={f"f{positions[c]}": types[c] for c in wanted},
                        include_columns=[f"f{positions[c]}" for c in wanted],
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, EOFError, ValueError):
            continue  # another time type, or the careful path
        if table.num_rows == 0:
            return None
        columns: dict[str, object] = {SESSION: np.zeros(table.num_rows, dtype=np.int8)}  # never used
        clean: dict[str, bool] = {}

        with ThreadPoolExecutor(2) as pool:  # Arrow lets go of the GIL: both columns at once
            encoded = pool.map(_encode_ids, (table.column(0), table.column(1)))
            for name, (column, as_is) in zip((UID, STREAMER), encoded, strict=True):
                columns[name], clean[name] = column, as_is
        for i, name in ((2, START), (3, END)):
            columns[name] = table.column(i).to_numpy() if times == pa.int64() else table.column(i).to_pandas()
        frame = pd.DataFrame(columns, copy=False)[list(COLUMNS)]
        frame.attrs["ids_as_is"] = clean
        # Everything is copied out of Arrow's buffers by now; give Arrow's allocator's cache back
        # (about 1 GB at 30M rows) before training allocates its own.
        del table, columns
        pa.default_memory_pool().release_unused()
        return frame
    return None


def _encode_ids(column) -> tuple[pd.Categorical, bool]:
    """An Arrow string column as a categorical, and whether its ids are already as the careful
    path would leave them (nothing to strip, none blank)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)  # one dictionary for every chunk: the hash table is shared
    dictionary = encoded.chunks[-1].dictionary
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks])
    names = pd.Index(dictionary.to_numpy(zero_copy_only=False), dtype=object)
    as_is = pc.utf8_trim_whitespace(dictionary).equals(dictionary) and not pc.any(pc.equal(dictionary, "")).as_py()
    return pd.Categorical.from_codes(codes, categories=names, validate=False), bool(as_is)


def _read_frame(path: Path, layout: str, positions: dict[str, int], skip: int) -> pd.DataFrame:
    """All columns read (so ragged rows are caught), the five required ones kept and renamed."""
    fast = _read_frame_arrow(path, layout, positions, skip)
    if fast is not None:
        return fast
    for attempt in _ATTEMPTS:
        dtype: dict[int, object] = {positions[UID]: str, positions[STREAMER]: str}
        dtype.update({positions[c]: t for c, t in attempt.items()})
        try:
            with _open_text(path) as text:
                frame = pd.read_csv(
                    text,
                    header=None,
                    skiprows=skip,
                    dtype=dtype,
                    keep_default_na=False,
                    na_filter=False,
                    skip_blank_lines=True,
                    skipinitialspace=True,
                )
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: expected at least one session row; found a header with no rows") from None
        except UnicodeDecodeError as exc:
            raise _undecodable(path, exc) from None
        except (EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}: expected a complete gzip stream; found {exc}") from None
        except (pd.errors.ParserError, csv.Error) as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            message = message.replace("Error tokenizing data. C error: ", "")
            message = message[:1].lower() + message[1:]
            raise DataError(f"{path}: expected well-formed CSV; found {message}") from None
        except (ValueError, OverflowError):
            continue  # a column is not all integers: try the next, more general read
        if frame.shape[1] < len(COLUMNS) or (layout != "header" and frame.shape[1] != len(COLUMNS)):
            raise DataError(f"{path}: expected {len(COLUMNS)} columns; found {frame.shape[1]}")
        frame = frame[[positions[c] for c in COLUMNS]]
        frame.columns = list(COLUMNS)
        return frame
    raise AssertionError("the last attempt reads text and cannot fail on types")


def _clean_ids(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(codes, names, as read): ids stripped of surrounding whitespace, factorised. Blank ids get
    code -1. Work happens on the distinct values, not on every row. `as read`: the column's own
    categories and codes, nothing changed (Arrow's reader checked that already)."""
    if isinstance(frame[column].dtype, pd.CategoricalDtype):  # read by Arrow: already factorised
        codes, uniques = frame[column].cat.codes.to_numpy(), frame[column].cat.categories
        if frame.attrs.get("ids_as_is", {}).get(column):
            return codes, np.asarray(uniques, dtype=object), True
    else:
        codes, uniques = pd.factorize(frame[column], sort=False)
    names = pd.Index(uniques).astype(str).str.strip()
    new_codes, merged = pd.factorize(names, sort=False)  # " a" and "a" become one id
    remap = np.where(np.asarray(merged)[new_codes] == "", -1, new_codes)
    return remap[codes], np.asarray(merged, dtype=object), False


def _duplicates(codes_u: np.ndarray, codes_s: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Rows repeating an earlier (uid, streamer, time_start, time_end): the same session reported
    twice. A 64-bit mix finds candidates fast; they are then compared exactly."""
    key = codes_u.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    key ^= codes_s.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    key ^= start.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
    key ^= end.astype(np.uint64) * np.uint64(0x27D4EB2F165667C5)
    # Keys seen twice, by sorting (3x faster than hashing 30M keys); usually none. Equal keys
    # share their top bit, so the two halves sort apart, one per core.
    top = (key >> np.uint64(63)).astype(bool)
    with ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(np.sort, (key[~top], key[top])))
    repeated = np.concatenate([h[1:][h[1:] == h[:-1]] for h in halves])
    candidate = np.isin(key, repeated) if len(repeated) else np.zeros(len(key), dtype=bool)
    out = np.zeros(len(key), dtype=bool)
    if candidate.any():
        exact = pd.DataFrame({"u": codes_u, "s": codes_s, "a": start, "b": end})[candidate]
        out[candidate] = exact.duplicated(keep="first").to_numpy()
    return out


def clean_rows(
    frame: pd.DataFrame, path: str | Path, first_line: int = 1, empty_ok: bool = False
) -> tuple[pd.DataFrame, str, dict[str, int]]:
    """(usable rows, time format, rows dropped by reason) of a frame of the five columns as read:
    the drop rules every source of sessions shares (a CSV file here, a batch of POST /events).
    Raises DataError when no row is usable, unless `empty_ok`."""
    rows_read = len(frame)
    dropped: dict[str, int] = {}
    keep = np.ones(rows_read, dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        new = mask & keep
        if new.any():
            dropped[reason] = dropped.get(reason, 0) + int(new.sum())
            keep[new] = False

    codes_u, users, users_as_read = _clean_ids(frame, UID)
    codes_s, streamers, streamers_as_read = _clean_ids(frame, STREAMER)
    drop(codes_u < 0, "blank uid")
    drop(codes_s < 0, "blank streamer_name")
    if not keep.any() and not empty_ok:
        raise DataError(f"{path}: expected rows with a uid and a streamer_name; found none in {rows_read:,} rows")
    if frame[START].dtype == np.int64 and frame[END].dtype == np.int64:
        time_format, start, end = INTEGER, frame[START].to_numpy(), frame[END].to_numpy()
        drop((np.abs(start) > MAX_TIME) | (np.abs(end) > MAX_TIME), "missing or unparseable time")
    else:
        example = f"{frame[START].iloc[0]!s},{frame[END].iloc[0]!s}"
        parsed, time_format, bad_time = _parse_times(frame[[START, END]], Path(path), first_line)
        if bad_time[keep].all() and not empty_ok:
            raise DataError(
                f"{path}: expected whole-number or ISO-8601 times in time_start and time_end; found none "
                f"that parse (first row: {example[:80]!r})"
            )
        start, end = parsed[START].to_numpy(), parsed[END].to_numpy()
        drop(bad_time, "missing or unparseable time")
    drop(end < start, "time_end before time_start")
    drop(_duplicates(codes_u, codes_s, start, end) & keep, "duplicate session")
    if not keep.any() and not empty_ok:
        raise DataError(f"{path}: no usable rows left of {rows_read:,} ({', '.join(dropped)})")

    # uid and streamer_name become categoricals: one string per distinct id, int codes per row.
    # Nothing dropped and ids as read (the usual case at scale): the columns are kept as they are.
    everything = bool(keep.all())

    def ids(column: str, codes: np.ndarray, names: np.ndarray, as_read: bool) -> pd.Categorical:
        if everything and as_read:
            return frame[column].array
        return pd.Categorical.from_codes(codes[keep], categories=pd.Index(names, dtype=object), validate=False)

    clean = pd.DataFrame(
        {
            UID: ids(UID, codes_u, users, users_as_read),
            STREAMER: ids(STREAMER, codes_s, streamers, streamers_as_read),
            START: start if everything else start[keep],
            END: end if everything else end[keep],
        },
        copy=False,
    )
    return clean, time_format, dropped


def read_sessions(path: str | Path) -> Sessions:
    """Read, validate and clean a sessions file. Raises DataError when nothing usable is left."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: expected a sessions CSV file; found no such file or directory")
    if path.is_dir():
        raise DataError(f"{path}: expected a sessions CSV file; found a directory")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: expected CSV rows of {','.join(COLUMNS)}; found an empty file")

    first, header_lines = first_record(path)
    layout, positions = detect_layout(path, first)
    skip = header_lines if layout == "header" else 0
    first_line = skip + 1  # file line of the first data row (exact when no quoted newlines)
    frame = _read_frame(path, layout, positions, skip)
    rows_read = len(frame)
    if rows_read == 0:
        raise DataError(f"{path}: expected at least one session row; found a header with no rows")

    clean, time_format, dropped = clean_rows(frame, path, first_line)
    return Sessions(
        frame=clean,
        path=str(path),
        layout=layout,
        time_format=time_format,
        rows_read=rows_read,
        dropped=dropped,
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="sessions CSV (plain or gzip)")
    args = parser.parse_args(argv)
    try:
        s = read_sessions(args.path)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f = s.frame
    print(
        f"{s.path}: layout {s.layout}, {s.time_format} times, {s.rows_read:,} rows read, "
        f"{s.drop_summary()}; {f[UID].nunique():,} users, {f[STREAMER].nunique():,} streamers, "
        f"times {f[START].min()}..{f[END].max()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

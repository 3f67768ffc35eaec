"""The model file: one file that every serving worker maps read-only, so N workers share one copy.

    from streamrec.model.model_file import load_model, save_model
    size = save_model(model, "models/model.pkl")   # atomic: temp file, fsync, rename
    model = load_model("models/model.pkl")         # milliseconds: the arrays are mapped, not read

Layout (all integers little-endian):

    bytes 0-7     MAGIC
    bytes 8-15    length of the header, uint64
    header        UTF-8 JSON: format, format_version, file_size, the small fields of the model
                  (ranker weights, ALS hyperparameters, metadata) and, per array, its dtype,
                  shape and offset
    arrays        raw C-order bytes, each starting on a page boundary (ALIGN)

Why this shape: `np.load(mmap_mode="r")` cannot map arrays inside a zipped `.npz`, and a pickle
has to be read and unpickled whole by every worker (3.3 GB private per worker at a million
viewers). Raw arrays at known offsets are mapped with one `mmap`; the page cache holds one copy
for every process, and loading costs a header parse. The header is JSON, not a pickle: a file
cannot make the loader run code, whatever it contains. The loader checks the file's size against
the header before mapping anything, so a truncated file is refused at startup instead of raising
SIGBUS on some later request. Files are replaced by rename and never rewritten in place: a worker
that maps the old file keeps a valid mapping until it loads the new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from streamrec.data.interactions import IdMap
from streamrec.model.checks import (
    ALIGN,
    MAX_HEADER_BYTES,
    Header,
    check_arrays,
    check_layout,
    parse_header,
    typed_header,
)
from streamrec.model.ranking import RankerWeights
from streamrec.model.recommender import JsonNames, Recommender

MAGIC = b"STRMREC\n"
FORMAT = "streamer-recommender"
FORMAT_VERSION = 5  # 3: one pickle; 4: JSON header and mapped arrays; 5: ten ranker features, a live ranker
_ALS_PARAMS = ("factors", "regularization", "alpha", "iterations", "random_state")


class ModelError(Exception):
    """A model file cannot be written or used; the message is one line meant for a person."""


# --- writing ----------------------------------------------------------------------------------


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it the racy way
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> int:
    """Write `path` through `write(file)` into a temp file beside it, fsync, rename, fsync the
    directory. The file gets the permissions any new file would (0666 less the umask), not the
    temp file's 0600, so a trainer and a service running as different users can share it.
    A crash or an error midway leaves any previous file exactly as it was. Returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return size


def check_writable(path: str | Path) -> None:
    """Fail before any training time is spent if the model cannot be written to `path`."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: expected a model file path; found a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the model there ({exc.strerror or exc})") from None


def _parts(model: Recommender) -> tuple[dict, dict[str, np.ndarray]]:
    """(header fields, arrays) of a model."""
    count = model.count
    # scipy keeps mapped index arrays without copying only when both have its index dtype.
    index_dtype = np.int32 if count.nnz < 2**31 and model.n_streamers < 2**31 else np.int64
    arrays = {
        "user_factors": model.als.user_factors,
        "item_factors": model.als.item_factors,
        "history.indptr": count.indptr.astype(index_dtype),
        "history.indices": count.indices.astype(index_dtype),
        "history.count": count.data,
        "history.watch_time": model.watch_time.data,
        "history.last_seen": model.last_seen.data,
        "history.bonus": model.history_bonus,
        "history.live_bonus": model.live_bonus,
        "popularity": model.popularity,
        "popular_ranking": model.popular_ranking,
        "catalog": model.catalog,
        "best_als": model.best_als,
        "streamer_json.blob": model.names_json.blob,
        "streamer_json.offsets": model.names_json.offsets,
    }
    # The momentum counts behind the history terms: what an update (train/update.py) needs to
    # recompute them. Serving never reads these pages.
    if model.recent is not None and model.decayed is not None:
        arrays["history.recent"], arrays["history.decayed"] = model.recent.data, model.decayed.data
    if model.frozen_pop_feature is not None:
        arrays["pop_feature"] = model.frozen_pop_feature
    for name, scores in model.own_scores.items():  # ranking on request reads these
        arrays[f"history.own.{name}"] = scores
    for side, id_map in (("users", model.users), ("streamers", model.streamers)):
        arrays.update({f"{side}.{name}": a for name, a in id_map.arrays().items()})
    for name, (ids, scores) in model.lists.items():
        arrays[f"lists.{name}.ids"], arrays[f"lists.{name}.scores"] = ids, scores
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": model.metadata,
        "als": {p: getattr(model.als, p) for p in _ALS_PARAMS},
        "time_max": int(model.time_max),
        "time_span": int(model.time_span),
        "strength": model.strength,
        "rankers": {
            name: {k: np.asarray(v).tolist() for k, v in w.to_dict().items()} for name, w in model.rankers.items()
        },
        "lists": sorted(model.lists),
    }
    return header, arrays


def save_model(model: Recommender, path: str | Path) -> int:
    """Write the model file atomically (see atomic_write). Returns bytes written."""
    header, arrays = _parts(model)
    missing = [name for name, a in arrays.items() if a is None]
    assert not missing, f"model is missing {missing}: build its lists first"
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    # Offsets depend on the header's length and the header holds the offsets: lay out the arrays
    # after a generous estimate of the header, then pad the header to that estimate.
    table: dict[str, dict[str, Any]] = {
        name: {"dtype": a.dtype.name, "shape": list(a.shape), "offset": 0} for name, a in arrays.items()
    }
    reserve = len(json.dumps({**header, "arrays": table, "file_size": 0})) + 64 * len(arrays) + 1024
    offset = _align(16 + reserve)
    for name, a in arrays.items():
        table[name]["offset"] = offset
        offset = _align(offset + a.nbytes)
    end = table[name]["offset"] + arrays[name].nbytes if arrays else offset
    text = json.dumps({**header, "arrays": table, "file_size": end}).encode()
    assert len(text) <= reserve

    def write(f: IO[bytes]) -> None:
        f.write(MAGIC + len(text).to_bytes(8, "little") + text)
        for name, a in arrays.items():
            f.write(b"\0" * (table[name]["offset"] - f.tell()))
            f.write(a.data.cast("B"))

    written = atomic_write(path, write)
    model.checksum = header_checksum(text)
    return written


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# --- reading ----------------------------------------------------------------------------------


def header_checksum(raw: bytes) -> str:
    """A model's identity: the SHA-256 of its header (16 hex digits). The header holds when it was
    trained, its sizes and every array's place, so two files with one checksum are one training run."""
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_header(path: Path, f: IO[bytes], size: int) -> tuple[Header, int, str]:
    """(the typed header, where it ends, its checksum) of an open model file; ValueError says what
    is wrong."""
    head = f.read(16)
    if len(head) < 16 or head[:8] != MAGIC:
        raise ModelError(f"{path} is not a model file of this service (it does not start with {MAGIC!r})")
    length = int.from_bytes(head[8:], "little")
    if length > size - 16:
        raise ModelError(f"{path} is truncated or not a model file (its header runs past the end of the file)")
    if length > MAX_HEADER_BYTES:
        raise ModelError(
            f"{path} is not a usable model file (a header of {length:,} bytes; at most {MAX_HEADER_BYTES:,})"
        )
    raw = f.read(length)
    try:
        header = parse_header(raw)
    except ValueError as exc:
        raise ModelError(f"{path} is truncated or not a model file (unreadable header: {_one_line(exc)})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path} is not a model file of this service")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path} has model format version {_short(header.get('format_version'))}, this service reads "
            f"version {FORMAT_VERSION}"
        )
    if header.get("file_size") != size:
        raise ModelError(
            f"{path} is truncated or not a model file (the header says {_short(header.get('file_size'))} bytes; "
            f"the file has {size:,})"
        )
    return typed_header(header), 16 + length, header_checksum(raw)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _map_arrays(header: Header, readonly: mmap.mmap, copy_on_write: mmap.mmap) -> dict[str, np.ndarray]:
    """Every array as a view of the mapping (where they lie was checked: check_layout). The ALS
    factors come from a copy-on-write mapping: implicit's solver takes writable buffers only (it
    never writes them; a write would copy the page for that process alone, never reach the file)."""
    arrays = {}
    for name, spec in header.arrays.items():
        source = copy_on_write if name.endswith("_factors") else readonly
        count = math.prod(spec.shape)
        arrays[name] = np.frombuffer(source, dtype=spec.dtype, count=count, offset=spec.offset).reshape(spec.shape)
    return arrays


def load_model(path: str | os.PathLike) -> Recommender:
    """Map a model file and check all of it (model/checks.py) before any of it is used; any
    problem is a ModelError of one line naming the path and what to do."""
    path = Path(path)
    fix = "train one with: python als_fit.py"
    if not path.exists():
        raise ModelError(f"no model file at {path}; {fix}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file; {fix}")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, header_end, checksum = _read_header(path, f, size)
            check_layout(header, header_end, size)
            readonly = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            copy_on_write = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except ModelError as exc:
        raise ModelError(f"{exc}; {fix}") from None
    except ValueError as exc:
        raise ModelError(f"{path} is not a usable model file ({_one_line(exc)}); {fix}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} ({exc.strerror or exc}); {fix}") from None
    try:
        arrays = _map_arrays(header, readonly, copy_on_write)
        check_arrays(header, arrays)
    except ValueError as exc:
        raise ModelError(f"{path} is not a usable model file ({_one_line(exc)}); {fix}") from None
    try:
        model = _from_parts(header.model_dump(exclude_unset=True), arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ModelError(
            f"{path} is truncated or not a model file ({type(exc).__name__}: {_one_line(exc)}); {fix}"
        ) from None
    model.checksum = checksum
    model.__dict__["mapped"] = arrays  # for warm(): every array as a view of the file
    return model


# Serving reads these first: the stored lists answer most requests, then the id maps and names.
WARM_FIRST = ("lists.", "users.", "streamers.", "streamer_json.", "history.", "popular")
PAGE = mmap.PAGESIZE


def warm(model: Recommender, seconds: float) -> tuple[int, int, float]:
    """Read every page of a loaded model's file into memory, the arrays serving reads first, for
    at most `seconds`: (bytes touched, bytes in all, seconds taken). A mapped file is read from
    disk on first touch; after a start or a reload with a cold page cache that costs the first
    requests tens of milliseconds each. Touching one byte per page (a strided read in NumPy, which
    releases the GIL) maps them here and reads them into the page cache the other workers share."""
    arrays: dict[str, np.ndarray] = model.__dict__.get("mapped", {})
    order = sorted(arrays, key=lambda n: next((i for i, p in enumerate(WARM_FIRST) if n.startswith(p)), 99))
    total = sum(a.nbytes for a in arrays.values())
    start = time.perf_counter()
    touched = 0
    chunk = 64 << 20
    for name in order:
        flat = arrays[name].reshape(-1).view(np.uint8)
        for lo in range(0, len(flat), chunk):
            if time.perf_counter() - start > seconds:
                return touched, total, time.perf_counter() - start
            part = flat[lo : lo + chunk]
            _ = int(part[::PAGE].max()) + int(part[-1])
            touched += len(part)
    return touched, total, time.perf_counter() - start


def _from_parts(header: dict, a: dict[str, np.ndarray]) -> Recommender:
    with threadpool_limits(1, "blas"):  # implicit checks the BLAS threads when constructed
        als = AlternatingLeastSquares(**{p: header["als"][p] for p in _ALS_PARAMS})
    als.user_factors, als.item_factors = a["user_factors"], a["item_factors"]
    users = IdMap(*(a[f"users.{n}"] for n in IdMap.ARRAYS))
    streamers = IdMap(*(a[f"streamers.{n}"] for n in IdMap.ARRAYS))
    shape = (len(users), len(streamers))
    if als.user_factors.shape[0] != shape[0] or als.item_factors.shape[0] != shape[1]:
        raise ValueError(f"factors of shape {als.user_factors.shape}, {als.item_factors.shape} for {shape} ids")

    def csr(data: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((data, a["history.indices"], a["history.indptr"]), shape=shape, copy=False)

    model = Recommender(
        als=als,
        users=users,
        streamers=streamers,
        count=csr(a["history.count"]),
        watch_time=csr(a["history.watch_time"]),
        last_seen=csr(a["history.last_seen"]),
        popularity=a["popularity"],
        popular_ranking=a["popular_ranking"],
        catalog=a["catalog"],
        time_max=header["time_max"],
        time_span=header["time_span"],
        rankers={name: RankerWeights.from_dict(d) for name, d in header["rankers"].items()},
        strength=header["strength"],
        metadata=header["metadata"],
        lists={name: (a[f"lists.{name}.ids"], a[f"lists.{name}.scores"]) for name in header["lists"]},
        best_als=a["best_als"],
        own_scores={name[len("history.own.") :]: v for name, v in a.items() if name.startswith("history.own.")},
        recent=csr(a["history.recent"]) if "history.recent" in a else None,
        decayed=csr(a["history.decayed"]) if "history.decayed" in a else None,
        frozen_pop_feature=a.get("pop_feature"),
    )
    # Stored, so that no worker derives them at startup.
    model.__dict__["history_bonus"] = a["history.bonus"]
    model.__dict__["live_bonus"] = a["history.live_bonus"]
    model.__dict__["names_json"] = JsonNames(a["streamer_json.blob"], a["streamer_json.offsets"])
    return model


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]

"""Spark for the engine: the session (`spark_session`) and the log read on it (`read_log`), by the
default engine's input rules (`data/sessions.py`): the same layouts (headered, or the public
headerless file; integer or ISO-8601 times), the same drop reasons and the same one-line errors.
Spark also reads `.csv.gz`, a directory of part files and Parquet.

    spark = spark_session("local[*]")
    log = read_log(spark, "sessions/")        # a SparkLog: the usable sessions, persisted
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from streamrec.data.sessions import (
    COLUMNS,
    END,
    GZIP_MAGIC,
    INTEGER,
    ISO,
    MAX_TIME,
    START,
    STREAMER,
    UID,
    DataError,
    Sessions,
    detect_layout,
    drop_summary,
    first_record,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger("training")

INSTALL_HINT = (
    "the Spark engine needs pyspark and Java 17: pip install -r requirements-spark.txt "
    "(or use the default --engine implicit)"
)
DEFAULT_MASTER = "local[*]"
_PARQUET_MAGIC = b"PAR1"


class EngineError(Exception):
    """The Spark engine cannot run here; one line meant for a person."""


def spark_session(master: str = DEFAULT_MASTER, app_name: str = "streamer-recommender"):
    """The Spark session to train in: `master` unless spark-submit already chose one. Times are
    read in UTC, as the default engine reads naive ISO times."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError(INSTALL_HINT) from None
    # pyspark warns about pandas 3 on every Arrow conversion; this engine moves data between the
    # driver and Spark as Arrow only, never through pandas.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if not _submitted():
        # Python workers run this interpreter (its packages and this project's modules); on a
        # cluster, PYSPARK_PYTHON and --py-files say what they run (SCALE.md).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master)
        if master.startswith("local"):
            # Spark's 200 shuffle partitions suit a cluster; on one machine each costs a task.
            builder = builder.config("spark.sql.shuffle.partitions", str(4 * (os.cpu_count() or 1)))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # a JVM that cannot start: Java missing, a bad master URL
        raise EngineError(f"Spark did not start ({master}): {str(exc).strip().splitlines()[0][:200]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # a line per gateway connection otherwise
    if str(spark.sparkContext.master).startswith("local") and not spark.sparkContext.getCheckpointDir():
        # ALS checkpoints its factors every 10 sweeps (long lineages overflow the stack); on a
        # cluster, point spark.checkpoint.dir at shared storage.
        checkpoints = tempfile.mkdtemp(prefix="spark-checkpoints-")
        atexit.register(shutil.rmtree, checkpoints, ignore_errors=True)
        spark.sparkContext.setCheckpointDir(checkpoints)
    return spark


def _submitted() -> bool:
    """Started by spark-submit (its JVM started this interpreter), which set the master itself."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


# --- reading ------------------------------------------------------------------------------------


@dataclass
class SparkLog:
    """Usable sessions on Spark: `frame` has uid, streamer_name (strings) and both times (int64),
    persisted; the rest as `sessions.Sessions` has it."""

    frame: DataFrame
    path: str
    layout: str
    time_format: str
    rows_read: int
    rows_used: int
    dropped: dict[str, int] = field(default_factory=dict)

    def drop_summary(self) -> str:
        return drop_summary(self.dropped)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_file(path: str | Path) -> Path | None:
    """`path` as a local regular file, or None (a directory, remote storage)."""
    path = str(path)
    if not _is_local(path):
        return None
    local = Path(path.removeprefix("file://"))
    return local if local.is_file() else None


def _data_files(directory: Path) -> list[Path]:
    """Part files as Spark lists them: not hidden, not bookkeeping (_SUCCESS), not empty dirs."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == _PARQUET_MAGIC


def _check_local(path: Path) -> tuple[str, list[Path]]:
    """("csv" or "parquet", the data files) for a local path, after the default engine's checks
    on each file's first bytes: the same one-line errors for a missing, empty, binary or
    undecodable file, or a first line that is neither header nor data."""
    if not path.exists():
        raise DataError(f"{path}: expected a sessions CSV file; found no such file or directory")
    files = _data_files(path) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: expected a sessions file or a directory of part files; found an empty directory")
    if all(f.stat().st_size >= 4 and _is_parquet(f) for f in files):
        return "parquet", files
    for f in files:
        if f.stat().st_size and _is_parquet(f):
            raise DataError(f"{path}: expected one format; found Parquet and CSV part files together ({f.name})")
        with open(f, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
        if gzipped and not f.name.endswith(".gz"):
            raise DataError(f"{f}: expected a name ending in .gz for gzip data (Spark picks the codec by name)")
    if all(f.stat().st_size == 0 for f in files):
        raise DataError(f"{path}: expected CSV rows of {','.join(COLUMNS)}; found an empty file")
    return "csv", [f for f in files if f.stat().st_size]


def _csv_layout(path: str, files: list[Path] | None, spark) -> tuple[str, dict[str, int], int]:
    """(layout, column positions, columns per row), from the first record of every part file
    (each must agree: Spark drops the first line of every part when the layout has a header)."""
    if files is None:  # remote storage: the first non-blank line, through Spark
        import csv

        first = spark.read.text(path).filter("trim(value) != ''").first()
        if first is None:
            raise DataError(f"{path}: expected CSV rows of {','.join(COLUMNS)}; found an empty file")
        records = [next(csv.reader([first[0]]))]
    else:
        records = [first_record(f)[0] for f in files]
    layouts = [detect_layout(Path(path), r) for r in records]
    layout, positions = layouts[0]
    for f, (other, where) in zip(files or [Path(path)], layouts, strict=True):
        if other != layout or where != positions:
            raise DataError(f"{f}: expected every part file in the layout of the first ({layout}); found {other}")
    return layout, positions, len(records[0])


def read_log(spark, path: str | Path) -> SparkLog:
    """Read, validate and clean sessions on Spark (CSV, .csv.gz, a directory of part files, or
    Parquet), by the default engine's rules; raises DataError with its messages."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.utils import AnalysisException

    path = str(path)
    local = _is_local(path)
    if local:
        kind, files = _check_local(Path(path.removeprefix("file://")))
    else:
        kind, files = ("parquet" if path.rstrip("/").endswith(".parquet") else "csv"), None
    try:
        if kind == "parquet":
            raw = spark.read.parquet(path)
            names = {c.lower(): c for c in raw.columns}
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise DataError(
                    f"{path}: header is missing column(s) {', '.join(missing)}; "
                    f"found columns {', '.join(c.lower() for c in raw.columns)}"
                )
            layout = "parquet"
            types = {c: raw.schema[names[c]].dataType for c in (START, END)}
            cols = [F.col(f"`{names[c]}`").cast("string").alias(c) for c in (UID, STREAMER)]
            for c in (START, END):
                if isinstance(types[c], T.TimestampType | T.TimestampNTZType | T.DateType):
                    cols.append(F.date_format(F.col(f"`{names[c]}`"), "yyyy-MM-dd'T'HH:mm:ss").alias(c))
                else:
                    cols.append(F.col(f"`{names[c]}`").cast("string").alias(c))
            raw = raw.select(*cols, F.lit(None).cast("string").alias("_corrupt"))
        else:
            layout, positions, width = _csv_layout(path, files, spark)
            schema = T.StructType(
                [T.StructField(f"c{i}", T.StringType()) for i in range(width)]
                + [T.StructField("_corrupt", T.StringType())]
            )
            targets = [str(f) for f in files] if files is not None else [path]
            # Every field is tokenized, or a row with too many fields goes unnoticed.
            spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
            raw = spark.read.csv(
                targets,
                schema=schema,
                header=layout == "header",
                mode="PERMISSIVE",
                columnNameOfCorruptRecord="_corrupt",
                encoding="UTF-8",
                nullValue=None,
                emptyValue="",
            )
            raw = raw.select(
                *[F.col(f"c{positions[c]}").alias(c) for c in (UID, STREAMER, START, END)],
                # Malformed: more fields than the first line (a short row is blank fields, as
                # in the default engine), or a quote left open.
                F.when(
                    F.col(f"c{width - 1}").isNotNull() | (_quotes(F.col("_corrupt")) % 2 == 1), F.col("_corrupt")
                ).alias("_corrupt"),
            )
        return _clean(spark, raw, path, layout)
    except AnalysisException as exc:
        message = str(exc).strip().splitlines()[0][:200]
        if "PATH_NOT_FOUND" in message or "does not exist" in message:
            raise DataError(f"{path}: expected a sessions CSV file; found no such file or directory") from None
        raise DataError(f"{path}: expected sessions Spark can read; found {message}") from None
    except (PySparkException, Py4JJavaError) as exc:  # a reading task failed on an executor
        text = str(exc)
        if "Unexpected end of input stream" in text or "EOFException" in text:
            raise DataError(f"{path}: expected a complete gzip stream; found it cut short") from None
        first = text.strip().splitlines()[0][:200]
        raise DataError(f"{path}: expected sessions Spark can read; found {first}") from None


def _quotes(column):
    from pyspark.sql import functions as F

    return F.length(column) - F.length(F.regexp_replace(column, '"', ""))


def _clean(spark, raw, path: str, layout: str) -> SparkLog:
    """The default engine's rules, in its order: blank ids, then unparseable times (one format for
    the whole log), then time_end before time_start, then repeated sessions."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    u, s = F.trim(F.col(UID)), F.trim(F.col(STREAMER))

    def integer(t):
        exact = F.expr(f"try_cast({t} as bigint)")
        d = F.expr(f"try_cast({t} as double)")
        whole = d.isNotNull() & ~F.isnan(d) & (d == F.floor(d)) & (F.abs(d) <= float(MAX_TIME))
        return F.when(exact.isNotNull() & (F.abs(exact) <= MAX_TIME), exact).when(whole, d.cast("bigint"))

    def iso(t):
        return F.expr(f"unix_seconds(try_cast({t} as timestamp))")

    flagged = raw.select(
        u.alias(UID),
        s.alias(STREAMER),
        integer("trim(time_start)").alias("int_start"),
        integer("trim(time_end)").alias("int_end"),
        iso("trim(time_start)").alias("iso_start"),
        iso("trim(time_end)").alias("iso_end"),
        F.col(START).alias("raw_start"),
        F.col(END).alias("raw_end"),
        F.col("_corrupt"),
        (F.coalesce(u, F.lit("")) == "").alias("blank_u"),
        (F.coalesce(s, F.lit("")) == "").alias("blank_s"),
        (F.col(UID).contains("\ufffd") | F.col(STREAMER).contains("\ufffd")).alias("undecodable"),
    )
    is_int = F.col("int_start").isNotNull() & F.col("int_end").isNotNull()
    is_iso = ~is_int & F.col("iso_start").isNotNull() & F.col("iso_end").isNotNull()
    totals = flagged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("_corrupt").alias("corrupt"),
        F.first("_corrupt", ignorenulls=True).alias("corrupt_example"),
        F.sum(F.col("undecodable").cast("long")).alias("undecodable"),
        F.sum(F.col("blank_u").cast("long")).alias("blank_u"),
        F.sum((~F.col("blank_u") & F.col("blank_s")).cast("long")).alias("blank_s"),
        F.sum(is_int.cast("long")).alias("n_int"),
        F.sum(is_iso.cast("long")).alias("n_iso"),
        F.sum((~F.col("blank_u") & ~F.col("blank_s") & (is_int | is_iso)).cast("long")).alias("kept_any_time"),
    ).first()
    rows = int(totals["rows"])
    if rows == 0:
        raise DataError(f"{path}: expected at least one session row; found a header with no rows")
    if totals["corrupt"]:
        example = str(totals["corrupt_example"])
        what = "an unterminated quote" if example.count('"') % 2 else "more fields than the first line"
        raise DataError(
            f"{path}: expected well-formed CSV; found {totals['corrupt']:,} row(s) with {what} (e.g. {example[:80]!r})"
        )
    if totals["undecodable"]:
        raise DataError(f"{path}: expected UTF-8 text; found undecodable bytes in {totals['undecodable']:,} row(s)")
    dropped: dict[str, int] = {}
    for reason, n in (("blank uid", totals["blank_u"]), ("blank streamer_name", totals["blank_s"])):
        if n:
            dropped[reason] = int(n)
    if sum(dropped.values()) == rows:
        raise DataError(f"{path}: expected rows with a uid and a streamer_name; found none in {rows:,} rows")
    n_int, n_iso = int(totals["n_int"]), int(totals["n_iso"])
    if n_int and n_iso:
        raise DataError(
            f"{path}: expected one time format; found {n_int:,} rows with integer times and "
            f"{n_iso:,} with ISO-8601 timestamps"
        )
    time_format = INTEGER if n_int or not n_iso else ISO
    if not totals["kept_any_time"]:
        first = raw.first()
        example = f"{first[START]!s},{first[END]!s}"
        raise DataError(
            f"{path}: expected whole-number or ISO-8601 times in time_start and time_end; found none "
            f"that parse (first row: {example[:80]!r})"
        )
    prefix = "int" if time_format == INTEGER else "iso"
    timed = flagged.filter(~F.col("blank_u") & ~F.col("blank_s")).select(
        UID, STREAMER, F.col(f"{prefix}_start").alias(START), F.col(f"{prefix}_end").alias(END)
    )
    counts = timed.agg(
        F.sum((F.col(START).isNull() | F.col(END).isNull()).cast("long")).alias("bad_time"),
        F.sum((F.col(END) < F.col(START)).cast("long")).alias("backwards"),
    ).first()
    clean = timed.filter(F.col(START).isNotNull() & F.col(END).isNotNull() & (F.col(END) >= F.col(START)))
    clean = clean.dropDuplicates([UID, STREAMER, START, END]).persist(StorageLevel.MEMORY_AND_DISK)
    used = clean.count()
    before_duplicates = rows - sum(dropped.values()) - int(counts["bad_time"] or 0) - int(counts["backwards"] or 0)
    for reason, n in (
        ("missing or unparseable time", counts["bad_time"]),
        ("time_end before time_start", counts["backwards"]),
        ("duplicate session", before_duplicates - used),
    ):
        if n:
            dropped[reason] = int(n)
    if used == 0:
        clean.unpersist()
        raise DataError(f"{path}: no usable rows left of {rows:,} ({', '.join(dropped)})")
    return SparkLog(clean, path, layout, time_format, rows, used, dropped)


def log_from_sessions(spark, sessions: Sessions) -> SparkLog:
    """Clean sessions already read on this machine (evaluation's training period), on Spark."""
    from pyspark import StorageLevel

    frame = sessions.frame
    pdf = pd.DataFrame(
        {
            UID: frame[UID].astype(str).to_numpy(dtype=object),
            STREAMER: frame[STREAMER].astype(str).to_numpy(dtype=object),
            START: frame[START].to_numpy(np.int64),
            END: frame[END].to_numpy(np.int64),
        }
    )

    sdf = spark.createDataFrame(pa.Table.from_pandas(pdf, preserve_index=False)).persist(StorageLevel.MEMORY_AND_DISK)
    return SparkLog(
        sdf,
        sessions.path,
        sessions.layout,
        sessions.time_format,
        sessions.rows_read,
        len(frame),
        dict(sessions.dropped),
    )

"""Train the recommender from a viewing-sessions CSV and save it to one model file.

    python als_fit.py                                  # demo sessions -> models/model.pkl
    python als_fit.py --data sessions.csv --model models/model.pkl
    python als_fit.py --data 100k_a.csv --factors 64 --iterations 15
    python als_fit.py --engine spark --data sessions/ --spark-master 'local[*]'   # SCALE.md
    python als_fit.py --update --data sessions_today.csv   # merge new sessions (train/update.py)

Defaults come from the environment or `.env` (DATA_PATH, MODEL_PATH), then from the built-ins
(`training.TrainParams`); `--help` shows them all. With no data configured it trains on the
built-in demo sessions (`data/demo.py`, written to DEMO_DATA_PATH the first time).

This file is the command line only: reading is `data/sessions.py`, the pipeline `train/pipeline.py`, the
file `model/model_file.py`; `--engine spark` trains on Spark instead (`train/spark.py`) and writes the
same file. A failed run leaves any previous model file untouched.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamrec import __version__
from streamrec.data import demo as demo_data
from streamrec.data.sessions import INTEGER, DataError, read_sessions
from streamrec.evaluate import offline as evaluation
from streamrec.events.log import EventLogError, events_through, open_log, read_log
from streamrec.logs import configure_logging
from streamrec.model.model_file import ModelError, check_writable, load_model, save_model
from streamrec.progress import Timer
from streamrec.settings import get_settings
from streamrec.train.pipeline import add_io_args, add_train_args, file_sha256, model_metadata, params_from_args, train
from streamrec.train.update import UPDATE_SWEEPS, update, update_metadata

log = logging.getLogger("als_fit")


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description="Train the streamer recommender on a sessions CSV.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_io_args(parser, settings)
    add_train_args(parser)
    parser.add_argument(
        "--evaluate", action="store_true", help="first print the offline evaluation (streamrec-evaluate)"
    )
    evaluation.add_evaluation_args(parser)
    parser.add_argument("--if-missing", action="store_true", help="do nothing if the model file already exists")
    parser.add_argument(
        "--engine",
        choices=("implicit", "spark"),
        default="implicit",
        help="implicit: this machine; spark: reading, aggregation, ALS and lists on Spark (SCALE.md)",
    )
    parser.add_argument("--spark-master", default=settings.spark_master, help="Spark master URL for --engine spark")
    updating = parser.add_argument_group(
        "update (--update)",
        "Fold the sessions logged since the model was trained into it, in place, instead of retraining: "
        "--data holds only the new sessions, --model is the model file to update (left as it was if the "
        "update fails). Known viewers and streamers keep their rows and new ones are added; ALS is refreshed "
        "from the model's own factors by a few sweeps; popularity, the catalog's newcomers, the history terms "
        "and every ranked list are recomputed; the rankers' weights are kept (only a full retrain learns them "
        "again). Only --data, --model and --update-sweeps apply.",
    )
    updating.add_argument("--update", action="store_true", help="update the --model file with the --data sessions")
    updating.add_argument(
        "--events",
        action="store_true",
        help="with --update: take the sessions from the event log (POST /events; EVENTS_PATH, or the store's stream "
        "with REDIS_URL) after the model's position instead of --data, then trim what the model has taken in",
    )
    updating.add_argument("--update-sweeps", type=int, default=UPDATE_SWEEPS, help="ALS sweeps of an --update")
    args = parser.parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    if args.if_missing and Path(args.model).is_file():
        print(f"model {args.model} exists; not retraining (run without --if-missing to retrain)")
        return 0
    try:
        params = params_from_args(args)
        evaluation.check_evaluation_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    timer = Timer()
    if args.update:
        if args.engine != "implicit" or args.evaluate or args.if_missing:
            parser.error("--update takes --data, --model and --update-sweeps only")
        if args.events:
            if args.data and args.data != settings.data_path:
                parser.error("--update --events reads the event log: give no --data")
            if args.update_sweeps < 1:
                parser.error(f"--update-sweeps must be at least 1; got {args.update_sweeps}")
            return _update_from_events(args, settings, timer)
        if not args.data:
            parser.error("--update needs --data (the sessions logged since the model was trained) or --events")
        if args.update_sweeps < 1:
            parser.error(f"--update-sweeps must be at least 1; got {args.update_sweeps}")
        return _update(args, timer)
    if args.events:
        parser.error("--events goes with --update")
    if args.engine == "spark":
        return _train_on_spark(args, params, settings, timer)
    try:
        check_writable(args.model)
        path, source = demo_data.resolve(args.data, settings.demo_data_path)
        with timer("read"):
            sessions = read_sessions(path)
        log.info(
            "%s: %s rows, %s layout, %s times; %s",
            path,
            f"{sessions.rows_read:,}",
            sessions.layout,
            sessions.time_format,
            sessions.drop_summary(),
        )
        if args.evaluate:
            out = evaluation.report_path(args.model, args.protocol)
            evaluation.run_from_args(args, sessions, params, out)
        # The source's checksum for the metadata, hashed while training runs (hashlib lets go of
        # the GIL): at a million viewers it is a 1.2 GB file.
        with ThreadPoolExecutor(1) as pool:
            hashing = pool.submit(file_sha256, path)
            model = train(sessions, params, timer, show_progress=True)
            with timer("hash"):
                sha = hashing.result()
        model.metadata = model_metadata(model, sessions, params, source, sha)
        with timer("save"):
            size = save_model(model, args.model)
    except (DataError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    _summary(source, sessions, model, timer, args.model, size)
    return 0


def _train_on_spark(args, params, settings, timer: Timer) -> int:
    """--engine spark: the same steps and the same file, on Spark (train/spark.py)."""
    from streamrec.train import spark as spark_engine
    from streamrec.train import spark_log

    try:
        check_writable(args.model)
        if args.data:  # kept as given: hdfs://, s3a:// and directories are Spark's to read
            path, source = args.data, str(args.data)
        else:
            path, source = demo_data.resolve(args.data, settings.demo_data_path)
        local_file = spark_log.local_file(path)
        if args.evaluate:
            if local_file is None:
                raise DataError(f"{path}: --evaluate reads the log on this machine; give it one local CSV file")
            out = evaluation.report_path(args.model, args.protocol)
            sessions = read_sessions(local_file)
            fit = spark_engine.trainer(args.spark_master)
            evaluation.run_from_args(args, sessions, params, out, fit=fit)
            del sessions
        model, spark_read = spark_engine.train_file(path, params, args.spark_master, timer)
        sha = file_sha256(local_file) if local_file is not None else None
        model.metadata = model_metadata(model, spark_read, params, source, sha, engine="spark")
        with timer("save"):
            size = save_model(model, args.model)
    except (DataError, ModelError, spark_log.EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _summary(source, spark_read, model, timer, args.model, size)
    return 0


def _update(args, timer: Timer) -> int:
    """--update: the model file with the new sessions merged in (train/update.py), written in place
    atomically; a failure leaves the file as it was."""
    try:
        check_writable(args.model)
        previous = load_model(args.model)
        with timer("read"):
            sessions = read_sessions(args.data)
        model, skipped = update(previous, sessions, args.update_sweeps, timer)
        model.metadata = update_metadata(previous, model, sessions, str(args.data), file_sha256(args.data))
        with timer("save"):
            size = save_model(model, args.model)
    except (DataError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in timer.steps.items())
    print(
        f"updated {args.model} with {args.data}: {sessions.rows_used:,} sessions, {skipped:,} of them already "
        f"in the model; {sessions.drop_summary()}\n"
        f"{model.n_users:,} users (+{model.n_users - previous.n_users:,}), {model.n_streamers:,} streamers "
        f"(+{model.n_streamers - previous.n_streamers:,}), {model.count.nnz:,} interactions; ranker weights kept\n"
        f"time: {steps}; total {sum(timer.steps.values()):.2f}s\n"
        f"model: {args.model} ({size / 1e6:.1f} MB)"
    )
    return 0


def _update_from_events(args, settings, timer: Timer) -> int:
    """--update --events: the sessions in the event log after the model's position merged in; the
    model file written (atomically), then the log trimmed of what the model now holds. A crash
    between the two leaves the log whole and the model's position past it: the next update reads
    on from there, so nothing is lost and nothing counted twice."""
    log_ = open_log(settings)
    try:
        check_writable(args.model)
        previous = load_model(args.model)
        kind = "redis" if settings.redis_url else "file"
        through = events_through(previous, kind)
        with timer("read"):
            sessions, position = read_log(log_, through, previous.metadata.get("time_format", INTEGER))
        if sessions is None or sessions.rows_used == 0:
            if position is not None:
                log_.trim(position)  # only deletions were logged: nothing for the model to take in
            print(
                f"no sessions in the event log ({log_.describe()}) after the model's position {through}; "
                "model unchanged"
            )
            return 0
        model, skipped = update(previous, sessions, args.update_sweeps, timer)
        model.metadata = update_metadata(previous, model, sessions, log_.describe(), None)
        model.metadata["events"] = {"log": log_.describe(), "through": position, "sessions": sessions.rows_used}
        with timer("save"):
            size = save_model(model, args.model)
        with timer("trim"):
            freed = log_.trim(position)
    except (DataError, ModelError, EventLogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        log_.close()
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in timer.steps.items())
    unit = "entries" if kind == "redis" else "bytes"
    print(
        f"updated {args.model} from the event log {log_.describe()}: {sessions.rows_used:,} sessions up to position "
        f"{position}, {skipped:,} of them already in the model; {sessions.drop_summary()}\n"
        f"{model.n_users:,} users (+{model.n_users - previous.n_users:,}), {model.n_streamers:,} streamers "
        f"(+{model.n_streamers - previous.n_streamers:,}), {model.count.nnz:,} interactions; ranker weights kept\n"
        f"event log trimmed: {freed:,} {unit} the model now holds\n"
        f"time: {steps}; total {sum(timer.steps.values()):.2f}s\n"
        f"model: {args.model} ({size / 1e6:.1f} MB)"
    )
    return 0


def _summary(source: str, sessions, model, timer: Timer, model_path: str, size: int) -> None:
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in timer.steps.items())
    ranker = "learned on the validation period" if model.rankers["all"].learned else "prior weights"
    print(
        f"trained on {source}: {sessions.rows_read:,} rows read, {sessions.drop_summary()}; "
        f"{model.n_users:,} users, {model.n_streamers:,} streamers, {model.count.nnz:,} interactions\n"
        f"ranker: {ranker}\n"
        f"time: {steps}; total {sum(timer.steps.values()):.2f}s\n"
        f"model: {model_path} ({size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate offline: `streamrec-evaluate` (or `python evaluation.py` from a checkout).

    streamrec-evaluate --data sessions.csv          # report only, beside the model path
    streamrec-evaluate --protocol live              # the RecSys 2021 live protocol
    streamrec-evaluate --replay                     # the test period streamed as events

The protocols and the report are `streamrec.evaluate.offline`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamrec import __version__
from streamrec.data import demo as demo_data
from streamrec.data.sessions import DataError, read_sessions
from streamrec.evaluate.offline import add_evaluation_args, check_evaluation_args, report_path, run_from_args
from streamrec.logs import configure_logging
from streamrec.settings import get_settings
from streamrec.train.pipeline import add_io_args, add_train_args, params_from_args


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        description="Evaluate the served ranking against ALS, POP and REP on a time split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_io_args(parser, settings, "where the report goes: beside this model path (no model is written)")
    add_train_args(parser)
    add_evaluation_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="JSON report path (default: beside the model)")
    args = parser.parse_args(argv)
    configure_logging("WARNING", settings.log_format)
    try:
        params = params_from_args(args)
        check_evaluation_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        path, _ = demo_data.resolve(args.data, settings.demo_data_path)
        sessions = read_sessions(path)
        out = args.out or report_path(args.model, args.protocol)
        run_from_args(args, sessions, params, out)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

"""Serve recommendations over HTTP: `streamrec-serve` (or `python platform.py` from a checkout).

    streamrec-serve                          # 127.0.0.1:8000, model from MODEL_PATH
    streamrec-serve --host 0.0.0.0 --port 8000 --workers 4

The app itself is `streamrec.serve.app` (`uvicorn streamrec.serve.app:app` works too).
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from pathlib import Path

from streamrec import __version__
from streamrec.logs import log_config


def main(argv: list[str] | None = None) -> int:
    from streamrec.settings import SettingsError, check_service, get_settings

    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        description="Serve streamer recommendations over HTTP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--host", default=settings.host, help="address to bind")
    parser.add_argument("--port", type=int, default=settings.port, help="TCP port")
    parser.add_argument("--workers", type=int, default=settings.workers, help="worker processes (1-64)")
    parser.add_argument("--model", default=str(settings.model_path), help="model file")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error(f"--workers must be between 1 and 64; got {args.workers}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be between 1 and 65535; got {args.port}")
    # Everything that would stop the server after the model is loaded, said first in one line.
    try:
        check_service(settings)
        from streamrec.serve.monitoring import check_multiproc_dir

        if settings.metrics:
            check_multiproc_dir()
        check_port(args.host, args.port)
    except (SettingsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from streamrec.model.model_file import ModelError, load_model
    from streamrec.serve.app import create_app

    logs = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(logs)
    # Load once here so that a missing or broken model stops startup with one clear line
    # instead of a worker traceback. With one worker the loaded model is handed to the app.
    try:
        recommender = load_model(args.model)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.workers == 1:
        # The same path for /admin/reload as for startup.
        settings = settings.model_copy(update={"model_path": Path(args.model)})
        app = create_app(settings, recommender=recommender, freeze=True)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=settings.log_level.lower(),
            log_config=logs,
            server_header=False,
        )
    else:
        # Workers import the app by name and each load the model in their lifespan.
        del recommender
        import os
        import shutil
        import tempfile

        os.environ["MODEL_PATH"] = args.model
        # Prometheus counts of every worker, in files the answering worker adds up: a fresh
        # directory per start unless one is given (serve/monitoring.py).
        own_dir = None
        if settings.metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="streamrec-metrics-")
        try:
            uvicorn.run(
                "streamrec.serve.app:app",
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=settings.log_level.lower(),
                log_config=logs,
                server_header=False,
            )
        finally:
            if own_dir:
                shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def check_port(host: str, port: int) -> None:
    """Raise OSError, in one line, when the server could not listen on host:port (in use, an
    address this machine does not have): before the model is loaded, not after."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (HOST, PORT or --port)") from None

"""Serve recommendations over HTTP.

    python platform.py                      # 127.0.0.1:8000, model from MODEL_PATH
    python platform.py --host 0.0.0.0 --port 8000 --workers 4

The FastAPI app itself lives in `service.py` (`uvicorn service:app` works too).

Why this file is odd: the product's entry point is called `platform.py`, which is also the name of
a standard-library module that numpy, pandas, uuid, pytest and uvicorn import. Anything run from
the repository root has the root first on `sys.path`, so their `import platform` finds this file.
When this file is imported under the name `platform`, it therefore loads the real standard-library
module and puts it in its own place in `sys.modules`; only when it is run as a script does it act
as the entry point. Keep the shim above every other import.
"""

if __name__ == "platform":
    import importlib.machinery
    import importlib.util
    import sys
    import sysconfig

    _spec = importlib.machinery.PathFinder.find_spec("platform", [sysconfig.get_path("stdlib")])
    if _spec is None or _spec.loader is None:  # pragma: no cover - a broken Python install
        raise ImportError("cannot find the standard-library 'platform' module")
    _stdlib_platform = importlib.util.module_from_spec(_spec)
    sys.modules["platform"] = _stdlib_platform
    _spec.loader.exec_module(_stdlib_platform)
    # The import statement that loaded us returns sys.modules["platform"]; also mirror the
    # standard module's names here for anyone already holding a reference to this module object.
    globals().update({k: v for k, v in vars(_stdlib_platform).items() if not k.startswith("__")})
else:
    import argparse
    import logging
    import sys
    from pathlib import Path

    def main(argv: list[str] | None = None) -> int:
        import uvicorn

        from model_file import ModelError, load_model
        from service import create_app
        from settings import get_settings

        settings = get_settings()
        parser = argparse.ArgumentParser(
            description="Serve streamer recommendations over HTTP.",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        parser.add_argument("--host", default=settings.host, help="address to bind")
        parser.add_argument("--port", type=int, default=settings.port, help="TCP port")
        parser.add_argument("--workers", type=int, default=settings.workers, help="worker processes (1-64)")
        parser.add_argument("--model", default=str(settings.model_path), help="model file")
        args = parser.parse_args(argv)
        if not 1 <= args.workers <= 64:
            parser.error(f"--workers must be between 1 and 64; got {args.workers}")

        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
            app = create_app(settings, recommender=recommender)
            uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower())
        else:
            # Workers import the app by name and each load the model in their lifespan.
            del recommender
            import os
            import shutil
            import tempfile

            os.environ["MODEL_PATH"] = args.model
            # Prometheus counts of every worker, in files the answering worker adds up: a fresh
            # directory per start unless one is given (monitoring.py).
            own_dir = None
            if settings.metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="streamrec-metrics-")
            try:
                uvicorn.run(
                    "service:app",
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    log_level=settings.log_level.lower(),
                )
            finally:
                if own_dir:
                    shutil.rmtree(own_dir, ignore_errors=True)
        return 0

    if __name__ == "__main__":
        sys.exit(main())

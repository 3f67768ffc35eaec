"""Serve recommendations over HTTP from a checkout (installed: `streamrec-serve`, the same flags).

    python platform.py                      # 127.0.0.1:8000, model from MODEL_PATH
    python platform.py --host 0.0.0.0 --port 8000 --workers 4

The command is `streamrec.cli.serve`; the app `streamrec.serve.app` (`uvicorn streamrec.serve.app:app`).

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
elif __name__ == "__main__":
    import sys

    from streamrec.cli.serve import main

    sys.exit(main())

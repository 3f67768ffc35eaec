"""What checking a model file costs at load: load_model in a fresh process, and a server's start.

    python bench/load_bench.py --model bench/out/model1m.pkl --baseline ../previous   # against another checkout
    python bench/load_bench.py --model bench/out/model1m.pkl --cold   # also with the page cache dropped

For this checkout and the --baseline checkout, alternating, --repeat times each: `load_model` in
a fresh Python process with the page cache warm (every check of model_checks.py runs here; the
baseline's loader maps without them), and with --cold the same after dropping the page cache
(needs root: writes /proc/sys/vm/drop_caches). Then `platform.py --workers 2` of each, warm:
seconds until /health answers (the parent loads the file once to check it, then each worker
loads it). Prints medians as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # platform.py hands over the standard module

from bench.common import ROOT, start_server, stop_server  # noqa: E402

TIMED_LOAD = (
    "import sys, time, importlib.util as u; sys.path.insert(0, {repo!r}); "
    # the package, or a release from before it (a flat root)
    "load_model = __import__('streamrec.model.model_file' if u.find_spec('streamrec') else 'model_file', "
    "fromlist=['load_model']).load_model; "
    "t = time.perf_counter(); load_model({model!r}); print(time.perf_counter() - t)"
)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def load_seconds(repo: Path, model: Path, cold: bool) -> float:
    if cold:
        drop_caches()
    else:  # warm: read the file once so that every page is in the cache
        with open(model, "rb") as f:
            while f.read(1 << 24):
                pass
    out = subprocess.run(
        [sys.executable, "-c", TIMED_LOAD.format(repo=str(repo), model=str(model))],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def start_seconds(repo: Path, model: Path) -> float:
    start = time.perf_counter()
    proc, _ = start_server([str(repo / "platform.py"), "--model", str(model), "--workers", "2"], timeout=300)
    seconds = time.perf_counter() - start
    stop_server(proc)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model file")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs of each")
    parser.add_argument("--cold", action="store_true", help="also with the page cache dropped (root)")
    args = parser.parse_args(argv)
    model = args.model.resolve()
    repos = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    kinds = ["warm"] + (["cold"] if args.cold else [])
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in repos}
    for _ in range(args.repeat):
        for name, repo in repos.items():
            for kind in kinds:
                figures[name].setdefault(f"load_{kind}_s", []).append(load_seconds(repo, model, kind == "cold"))
            figures[name].setdefault("health_2_workers_s", []).append(start_seconds(repo, model))
    summary = {
        "model": str(model),
        "model_mb": round(model.stat().st_size / 1e6, 1),
        **{name: {k: round(statistics.median(v), 3) for k, v in f.items()} for name, f in figures.items()},
        "runs": figures,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

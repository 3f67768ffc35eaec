"""What the benchmarks use: the tests' real-process helpers, and where generated files go."""

from __future__ import annotations

from tests.server.helpers import (  # noqa: F401 - re-exported for the benchmarks
    ROOT,
    anon_mb,
    children,
    free_port,
    private_mb,
    rss_mb,
    stop_server,
)
from tests.server.helpers import start_process as start_server  # noqa: F401

OUT = ROOT / "bench" / "out"  # generated data, models and reports (git-ignored)

"""The service's numbers for Prometheus: `GET /metrics` in its text format.

Every worker counts: with several workers each one writes its counts to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode) and the worker that answers a
scrape adds them all up. `python platform.py --workers N` sets that directory up (a fresh one per
start, removed at exit); under a plain `uvicorn streamrec.serve.app:app --workers N`, point
PROMETHEUS_MULTIPROC_DIR at an empty directory before starting, or each answer covers only the
worker that gave it. With one worker the counts live in the process. Requests are tallied in
memory and added once a second (Metrics.flush): a scrape may miss another worker's last second.

| metric | type | labels |
| --- | --- | --- |
| streamrec_requests_total | counter | route, status, source (personal, recent, popular; "" elsewhere) |
| streamrec_request_duration_seconds | histogram | route |
| streamrec_model_created_timestamp_seconds | gauge, per worker | pid |
| streamrec_model_users, streamrec_model_streamers | gauge (largest over workers) | |
| streamrec_live_streamers | gauge (largest over workers) | |
| streamrec_live_published_timestamp_seconds | gauge (oldest over workers) | |
| streamrec_live_age_seconds | gauge, at scrape time: now - the oldest published live set | |
| streamrec_reloads_total | counter | result (done, failed) |
| streamrec_event_batches_total | counter | result (accepted, invalid, refused) |
| streamrec_event_sessions_total | counter | result (accepted; dropped by the sessions file's rules) |
| streamrec_events_pending_sessions | gauge (largest over workers) | |
| streamrec_events_newest_time, streamrec_model_newest_time | gauge (largest over workers) | |
| streamrec_events_model_lag | gauge (largest over workers) | |

The event gauges: sessions read from the event log that the served model has not taken in; the
newest session end read from the log and the served model's (in the log's time unit); and how far
the model is behind (the first minus the second).

`route` is the route's template (`/recomendations/user/{user_id:path}`), never the raw path:
"unmatched" for anything no route matched, so a scan of odd URLs cannot grow the series.
"""

from __future__ import annotations

import functools
import os
import re
import time
from bisect import bisect_left
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamrec.settings import SettingsError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DEAD_FILE = re.compile(r"gauge_live\w*_(\d+)\.db$")


class MetricsDirError(SettingsError):
    """PROMETHEUS_MULTIPROC_DIR names no directory: one line for a person."""


def check_multiproc_dir() -> None:
    """Raise MetricsDirError when PROMETHEUS_MULTIPROC_DIR is set to something not a directory:
    prometheus-client would fail with a traceback on the first metric it creates."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and not os.path.isdir(folder):
        raise MetricsDirError(
            f"{MULTIPROC_ENV}={folder}: expected an existing directory for the workers' counts; found none "
            f"(create it, or unset it and let platform.py make one)"
        )


@functools.cache
def families() -> SimpleNamespace:
    """The Prometheus metrics, created on first use rather than at import: with several workers
    creating one writes a file in PROMETHEUS_MULTIPROC_DIR, which must be checked first."""
    check_multiproc_dir()
    return SimpleNamespace(
        requests=Counter("streamrec_requests", "HTTP requests answered", ["route", "status", "source"]),
        latency=Histogram(
            "streamrec_request_duration_seconds",
            "time from the request's arrival at the app to its last response byte",
            ["route"],
            buckets=BUCKETS,
        ),
        model_created=Gauge(
            "streamrec_model_created_timestamp_seconds",
            "when the model each worker serves was trained (Unix time)",
            multiprocess_mode="liveall",
        ),
        model_users=Gauge("streamrec_model_users", "viewers the served model knows", multiprocess_mode="livemax"),
        model_streamers=Gauge(
            "streamrec_model_streamers", "streamers the served model knows", multiprocess_mode="livemax"
        ),
        live_streamers=Gauge(
            "streamrec_live_streamers", "live streamers in the published live set", multiprocess_mode="livemax"
        ),
        live_published=Gauge(
            "streamrec_live_published_timestamp_seconds",
            "when the live set a worker serves was published (Unix time; the oldest over workers)",
            multiprocess_mode="livemin",
        ),
        reloads=Counter("streamrec_reloads", "model reloads, by result", ["result"]),
        model_info=Gauge(
            "streamrec_model_info",
            "1 for the model each worker serves: its header checksum and when it was trained",
            ["checksum", "created_at"],
            multiprocess_mode="liveall",
        ),
        event_batches=Counter("streamrec_event_batches", "POST /events batches, by result", ["result"]),
        event_sessions=Counter("streamrec_event_sessions", "sessions sent to POST /events, by result", ["result"]),
        events_pending=Gauge(
            "streamrec_events_pending_sessions",
            "sessions read from the event log that the served model has not taken in",
            multiprocess_mode="livemax",
        ),
        events_newest=Gauge(
            "streamrec_events_newest_time",
            "the latest session end read from the event log (the log's time unit)",
            multiprocess_mode="livemax",
        ),
        model_newest=Gauge(
            "streamrec_model_newest_time",
            "the latest session end the served model has taken in (the log's time unit)",
            multiprocess_mode="livemax",
        ),
        events_lag=Gauge(
            "streamrec_events_model_lag",
            "the newest event's time minus the served model's (the log's time unit; 0: up to date)",
            multiprocess_mode="livemax",
        ),
        live_version=Gauge(
            "streamrec_live_version_info",
            "1 for the live-set version each worker serves ('<epoch>.<number>' from the store, or file:<mtime>)",
            ["version"],
            multiprocess_mode="liveall",
        ),
    )


class Metrics:
    """What the service records, behind a switch (METRICS=false: nothing, and no /metrics).

    Requests are tallied in plain dicts on the event loop and added to the Prometheus counters
    and histogram once a second (`flush`, also before a scrape): prometheus-client's own per
    request updates (a lock and, with several workers, a write to a mapped file for the counter,
    the histogram's bucket and its sum) cost 3-4% of the throughput; a tally costs a dict update.
    """

    def __init__(self, enabled: bool = True):
        """Raises MetricsDirError (enabled, with a PROMETHEUS_MULTIPROC_DIR that is no directory)."""
        self.enabled = enabled
        self.m = families() if enabled else SimpleNamespace()  # disabled: nothing is ever set
        self._counts: dict[tuple[str, int, str], int] = {}  # since the last flush
        self._latency: dict[str, list] = {}  # route -> observations per bucket (+Inf last), then their sum
        self._held: dict[str, tuple[str, ...]] = {}  # info gauge -> the labels set to 1

    def request(self, route: str, status: int, source: str, seconds: float) -> None:
        """Tally one request (on the event loop: no lock)."""
        key = (route, status, source)
        self._counts[key] = self._counts.get(key, 0) + 1
        tally = self._latency.get(route)
        if tally is None:
            tally = self._latency[route] = [0] * (len(BUCKETS) + 1) + [0.0]
        tally[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        tally[-1] += seconds

    def flush(self) -> None:
        """Add the tallies to the Prometheus metrics (on the event loop, as `request`)."""
        counts, self._counts = self._counts, {}
        latency, self._latency = self._latency, {}
        for (route, status, source), n in counts.items():
            self.m.requests.labels(route, str(status), source).inc(n)
        for route, tally in latency.items():
            child = self.m.latency.labels(route)
            # prometheus-client has no observe-many: its per-bucket values (not cumulative, as
            # observe() keeps them) and its sum take the tally directly.
            for bucket, n in zip(child._buckets, tally[:-1], strict=True):
                if n:
                    bucket.inc(n)
            child._sum.inc(tally[-1])

    def model(self, model) -> None:
        if not self.enabled:
            return
        created = model.metadata.get("created_at")
        try:
            self.m.model_created.set(datetime.fromisoformat(created).timestamp() if created else 0)
        except (TypeError, ValueError):
            self.m.model_created.set(0)
        self.m.model_users.set(model.n_users)
        self.m.model_streamers.set(model.n_streamers)
        self._info(self.m.model_info, (model.checksum or "-", str(created or "-")))

    def live_version(self, version: str | None) -> None:
        if self.enabled and version is not None:
            self._info(self.m.live_version, (version,))

    def _info(self, gauge, labels: tuple[str, ...]) -> None:
        """An info gauge: 1 for `labels`, 0 for the ones this worker had before."""
        held = self._held.get(gauge._name)
        if held is not None and held != labels:
            gauge.labels(*held).set(0)
        gauge.labels(*labels).set(1)
        self._held[gauge._name] = labels

    def live(self, live) -> None:
        if not self.enabled or live is None:
            return
        self.m.live_streamers.set(len(live))
        self.m.live_published.set(live.since.timestamp())

    def events(self, batch, result: str) -> None:
        """One POST /events batch: accepted (its sessions, and those dropped by the file's rules),
        invalid (422) or refused (503); `batch` None when it did not parse."""
        if not self.enabled:
            return
        self.m.event_batches.labels(result).inc()
        if result == "accepted" and batch is not None:
            self.m.event_sessions.labels("accepted").inc(len(batch))
            dropped = sum(batch.dropped.values())
            if dropped:
                self.m.event_sessions.labels("dropped").inc(dropped)

    def events_state(self, pending: int, newest: int | None, model_newest: int) -> None:
        if not self.enabled:
            return
        self.m.events_pending.set(pending)
        self.m.model_newest.set(model_newest)
        if newest is not None:
            self.m.events_newest.set(newest)
            self.m.events_lag.set(max(newest - model_newest, 0))

    def reloaded(self, ok: bool) -> None:
        if self.enabled:
            self.m.reloads.labels("done" if ok else "failed").inc()

    def worker_exit(self) -> None:
        """Drop this worker's per-worker gauges from the shared directory (a clean exit)."""
        if self.enabled and os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())


class _LiveAge:
    """streamrec_live_age_seconds, computed when scraped from the oldest published live set."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        published = [
            s.value
            for family in self.source.collect()
            if family.name == "streamrec_live_published_timestamp_seconds"
            for s in family.samples
            if s.value > 0
        ]
        age = GaugeMetricFamily("streamrec_live_age_seconds", "seconds since the oldest served live set was published")
        if published:
            age.add_metric([], max(time.time() - min(published), 0.0))
        yield age


def exposition() -> bytes:
    """The text a scrape gets: every worker's counts in multiprocess mode, else this process's."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        forget_dead_workers(folder)
        registry = CollectorRegistry()
        source: Collector = multiprocess.MultiProcessCollector(registry)
    else:
        registry, source = CollectorRegistry(), REGISTRY
        registry.register(_Forward(REGISTRY))
    registry.register(_LiveAge(source))
    return generate_latest(registry)


def forget_dead_workers(folder: str) -> list[int]:
    """Remove the per-worker gauges of worker processes that are gone (killed and respawned:
    uvicorn's supervisor does not tell prometheus-client), so a scrape shows only live workers.
    Counters keep every worker's totals: a counter that went down would read as a reset."""
    dead = set()
    for name in os.listdir(folder):
        match = _DEAD_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class _Forward:
    """This process's default registry, inside another one."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()


class RequestMetrics:
    """ASGI middleware: each HTTP request counted by route template, status and source, and
    timed. `metrics` is read per request, so that a test's app records into its own switch."""

    def __init__(self, app, metrics: Metrics, known: frozenset[str]):
        self.app, self.metrics, self.known = app, metrics, known

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.metrics.enabled:
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else (scope["path"] if scope["path"] in self.known else "unmatched")
            self.metrics.request(path, status, scope.get("source", ""), time.perf_counter() - start)

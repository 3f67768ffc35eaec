"""Two real workers serving one mapped model file: one copy in the page cache, not one each."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.server.helpers import children, run_cli, start_server, stop_server


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """A model of a few MB (a generated log of 1,500 viewers), so that sharing shows in pages."""
    folder = tmp_path_factory.mktemp("mapped")
    data, model = folder / "sessions.csv", folder / "model.pkl"
    result = run_cli("-m", "streamrec.data.demo", "--users", "1500", "--out", str(data))
    assert result.returncode == 0, result.stderr
    result = run_cli("als_fit.py", "--data", str(data), "--model", str(model), "--factors", "16", "--iterations", "3")
    assert result.returncode == 0, result.stderr
    return model


def mappings_of(pid: int, path: Path) -> list[dict[str, int]]:
    """The smaps entries (sizes in kB) of every mapping of `path` in process `pid`."""
    entries, current = [], None
    target = str(path.resolve())
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            current = {} if len(fields) >= 6 and fields[5] == target else None
            if current is not None:
                entries.append(current)
        elif current is not None and fields[0].endswith(":") and len(fields) >= 2 and fields[1].isdigit():
            current[fields[0][:-1]] = int(fields[1])
    return entries


def test_two_workers_share_the_model_pages(demo_model):
    proc, base = start_server(demo_model, "--workers", "2")
    try:
        # Every viewer once, a new connection for each request so that the kernel spreads them
        # over both workers: each worker reads (nearly) every page of the lists.
        served_by: set[int] = set()
        host, port = urlsplit(base).hostname, urlsplit(base).port

        def get(path: str) -> bytes:
            conn = http.client.HTTPConnection(host, port, timeout=10)  # new each time: cheap, unlike a client
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                assert response.status == 200
                return response.read()
            finally:
                conn.close()

        def hammer(offset: int) -> None:
            for uid in range(offset, 1501, 4):
                get(f"/recomendations/user/{uid}")
            for _ in range(20):
                served_by.add(json.loads(get("/health"))["worker_pid"])

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(1, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        workers = [pid for pid in children(proc.pid) if mappings_of(pid, demo_model)]
        assert len(workers) == 2 and set(workers) == served_by, "each worker maps the model file and serves"
        size_kb = demo_model.stat().st_size / 1024
        rss, shared, private = {}, {}, {}
        for pid in workers:
            maps = mappings_of(pid, demo_model)
            rss[pid] = sum(m["Rss"] for m in maps)
            shared[pid] = sum(m["Shared_Clean"] for m in maps)
            private[pid] = sum(m["Private_Clean"] for m in maps)
            assert rss[pid] > 0.2 * size_kb  # the worker really reads the file through the mapping
            assert sum(m["Private_Dirty"] + m.get("Anonymous", 0) for m in maps) == 0  # no private copy
        # Physical memory behind both mappings: the pages both map (counted once) plus those only
        # one maps. Two private copies would cost the sum of the two RSS; one shared copy about
        # half of it. Not every page is shared: the kernel maps a few neighbouring pages around
        # each fault ("fault-around"), so each worker holds pages it never read and the other
        # never maps.
        physical = max(shared.values()) + sum(private.values())
        both = sum(rss.values())
        assert physical < 0.75 * both, f"{physical} kB behind {both} kB mapped: {rss}, shared {shared}"
        # The supervising parent checked the file at startup and kept nothing mapped.
        assert mappings_of(proc.pid, demo_model) == []
    finally:
        stop_server(proc)

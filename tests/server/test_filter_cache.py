"""The filter cache: bounded by bytes, keyed by what a filter allows (never by the text asked),
with limits on the values a request may send; a stream of distinct filters against the real
server at the demo's size grows the worker by at most 64 MB; and cutting what is kept per filter
never changes an answer."""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import pytest

from streamrec.data.catalog import Catalog, catalog_codes
from streamrec.data.demo import CATEGORIES, LANGUAGES
from streamrec.model.model_file import load_model
from streamrec.serve import filters
from streamrec.serve.live import LiveStream
from streamrec.serve.serving import ServedModel
from tests.helpers import answer_body
from tests.server.helpers import anon_mb, start_server, stop_server

TOKEN = "filter-cache-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BLOCK_CATALOG = {
    **{f"alpha{i}": ("Chess" if i < 3 else "Art", "en" if i < 3 else "de") for i in range(6)},
    **{f"bravo{i}": ("Chess" if i < 3 else "Music", "es" if i < 4 else None) for i in range(5)},
}


@pytest.fixture(scope="module")
def served(block_model_path):
    model = load_model(block_model_path)
    codes = catalog_codes(Catalog(BLOCK_CATALOG), model.streamers)
    return ServedModel(model, codes=codes).with_live([LiveStream(n) for n in model.streamers.ids[::2]])


def test_values_no_streamer_has_never_make_an_entry(served):
    fresh = ServedModel(served.model, codes=served.catalog_codes)
    for i in range(500):
        fresh.filtered(["Chess", f"junk{i}"], [f"xx{i}"])
        fresh.filtered([f"junk{i}"], [])
    assert len(fresh.filters) == 2  # Chess with no language at all, and no category at all
    fresh.filtered(["CHESS", "chess"], ["XX1"])
    assert len(fresh.filters) == 2  # case and repeats do not count either


def test_the_cache_is_bounded_by_bytes_least_recently_used_first(served):
    one = served.filtered(["Chess"], []).nbytes
    cache = filters.FilterCache(budget=int(2.5 * one))
    model, codes = served.model, served.catalog_codes
    keys = [filters.filter_key(codes, [c], [], False) for c in ("Chess", "Art", "Music")]

    def build(key):
        return lambda: filters.gather(model, codes, key, model.catalog, model.popular_ranking)

    first = cache.get(keys[0], build(keys[0]))
    cache.get(keys[1], build(keys[1]))
    assert cache.get(keys[0], build(keys[0])) is first  # a hit, now the most recent
    cache.get(keys[2], build(keys[2]))  # Art, the least recently used, goes
    assert set(cache._entries) == {keys[0], keys[2]} and cache.bytes <= cache.budget
    nothing = filters.FilterCache(budget=0)  # FILTER_CACHE_MB=0: gathered per request, never kept
    assert nothing.get(keys[0], build(keys[0])).candidates.rows.tolist() == first.candidates.rows.tolist()
    assert len(nothing) == 0 and nothing.bytes == 0


def test_live_factors_are_gathered_only_for_live_requests(served):
    fresh = ServedModel(served.model, served.live, codes=served.catalog_codes)
    answer_body(fresh, "1", 5, False, categories=["Chess"])
    assert [key[2] for key in fresh.filters._entries] == [False]
    answer_body(fresh, "1", 5, False, live_only=True, categories=["Chess"])
    assert sorted(key[2] for key in fresh.filters._entries) == [False, True]


def answers(served: ServedModel) -> list[bytes]:
    out = []
    for uid in [str(u) for u in range(1, 61)] + ["stranger"]:
        for cats, langs in ((["Chess"], []), (["Art", "Music"], []), ([], ["es"]), (["Chess"], ["en", "es"])):
            for exclude in (False, True):
                for live_only in (False, True):
                    for k in (1, 3, 12):
                        recent = ["alpha1", "bravo2"] if uid == "stranger" and k == 3 else None
                        out.append(answer_body(served, uid, k, exclude, live_only, recent, cats, langs))
    return out


def test_a_cut_popular_order_never_changes_an_answer(served, monkeypatch):
    """Exactly min(k, streamers that pass) whatever is kept per filter: with a head of one
    streamer, every top-up and popular list reads the whole order instead, and answers the same."""
    expected = answers(ServedModel(served.model, served.live, codes=served.catalog_codes))
    monkeypatch.setattr(filters, "POPULAR_HEAD", 1)
    cut = ServedModel(served.model, served.live, codes=served.catalog_codes)
    assert answers(cut) == expected
    assert all(not p.complete and len(p.head) == 1 for p in cut.filters._entries.values() if len(p.head))
    for body in expected:
        items = json.loads(body)["recommendations"]
        assert len({i["streamer_name"] for i in items}) == len(items)


@pytest.fixture(scope="module")
def demo_server(demo_size_model, tmp_path_factory):
    model = tmp_path_factory.mktemp("filter-memory") / "model.pkl"
    shutil.copy(demo_size_model, model)
    shutil.copy(demo_size_model.with_name("demo_streamers.csv"), model.with_name("streamers.csv"))
    proc, base = start_server(model, ADMIN_TOKEN=TOKEN, STREAMERS_PATH=str(model.with_name("streamers.csv")))
    yield proc, base, load_model(model)
    stop_server(proc)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"category": ",".join(f"c{i}" for i in range(21))}, "category"),
        ({"language": "en," + "x" * 129}, "language"),
    ],
)
def test_too_many_or_too_long_filter_values_are_a_422_naming_the_parameter(demo_server, query, param):
    _, base, _ = demo_server
    for path in ("/recomendations/user/1", "/streamers/x/similar"):
        r = httpx.get(f"{base}{path}", params=query)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["query", param] and "expected at most 20 comma-separated values" in detail["msg"]
    assert httpx.get(f"{base}/recomendations/user/1", params={"category": ",".join(CATEGORIES)}).status_code == 200


def test_ten_thousand_distinct_filters_grow_a_worker_by_at_most_64_mb(demo_server):
    """Junk values, distinct valid combinations and live-only ones, against one real worker with
    every streamer live (the largest live entries): anonymous memory, not the mapped model."""
    proc, base, model = demo_server
    names = model.streamers.ids.tolist()
    r = httpx.put(f"{base}/live", json={"streamers": names}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["live"] == len(names)
    rng = random.Random(0)

    def query(i: int) -> dict[str, str]:
        if i % 3 == 0:  # junk: six real languages and one no streamer has
            return {"language": f"en,de,es,fr,ru,pt,junk{i}"}
        params = {
            "category": ",".join(rng.sample(CATEGORIES, rng.randint(1, 6))),
            "language": ",".join(rng.sample(sorted(set(LANGUAGES)), rng.randint(1, 4))),
        }
        if i % 3 == 2:
            params["live_only"] = "true"
        return params

    queries = [query(i) for i in range(10_000)]

    def ask(chunk: range) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as client:
            return [
                client.get(f"/recomendations/user/{i % 9000}", params={**queries[i], "k": "10"}).status_code
                for i in chunk
            ]

    for status in ask(range(300)):  # warm: the name cache, the allocator's first arenas
        assert status == 200
    before = anon_mb(proc.pid)
    with ThreadPoolExecutor(4) as pool:
        statuses = [s for part in pool.map(ask, [range(j, 10_000, 4) for j in range(4)]) for s in part]
    after = anon_mb(proc.pid)
    print(f"anonymous memory of the worker: {before:.1f} MB before, {after:.1f} MB after 10,000 filters")
    assert statuses == [200] * 10_000
    assert after - before <= 64, (before, after)
    assert np.isfinite(after)

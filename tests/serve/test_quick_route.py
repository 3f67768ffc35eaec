"""The recommendations route's shortcut (serve/routes.py QuickRoute) answers exactly as FastAPI's own
handling of the route does: for any query, the same status, headers and body, byte for byte. Queries
are generated from the route's parameters with values that are valid, invalid and borderline (k as
"05", "+5", " 5", "1e1"; booleans as "True", "yes"; repeated names; unknown names; encoded text)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.serve.app import create_app
from streamrec.serve.routes import QuickRoute
from streamrec.settings import Settings
from tests.helpers import GROUP_A, GROUP_B
from tests.server.helpers import metric_value as value

TOKEN = "quick-route-admin-token"
VALUES = {
    "k": ["1", "5", "10", "100", "0", "101", "05", "+5", " 5", "5 ", "1e1", "5.0", "-1", "", "abc", "10%00", "٣"],
    "exclude_watched": ["true", "false", "1", "0", "True", "FALSE", "yes", "no", "on", "t", "", "2", "tru"],
    "live_only": ["true", "false", "1", "0", "True", "yes", "off", "", "maybe"],
    "recent": ["", "alpha1", "alpha1,bravo2", " alpha1 , ,bravo3", "nobody", "alpha1,,", "%E2%82%AC", "a" * 300],
    "category": ["", "Chess", "chess,Music", "x" * 129, ",".join(["c"] * 21), "%ZZ", "Chess%2CMusic"],
    "language": ["", "en", "EN,de", "y" * 200, "en,,fr"],
    "junk": ["1", ""],
}
USERS = ["1", "45", "60", "61", "nobody", "%E2%98%83", "a%2Fb", "", "1/2", "x" * 500]


def routes(app) -> list[QuickRoute]:
    return [r for r in app.routes if isinstance(r, QuickRoute) and hasattr(r, "full_app")]


@pytest.fixture(scope="module")
def client(block_model_path):
    app = create_app(Settings(model_path=block_model_path, admin_token=TOKEN, _env_file=None))
    with TestClient(app) as c:
        assert len(routes(app)) == 2  # both spellings
        yield c


def both(client, url: str):
    """(shortcut's answer, FastAPI's answer) to one GET."""
    quick = client.get(url)
    swapped = [(r, r.app) for r in routes(client.app)]
    for route, _ in swapped:
        route.app = route.full_app
    try:
        full = client.get(url)
    finally:
        for route, app in swapped:
            route.app = app
    return quick, full


query = st.lists(
    st.sampled_from(list(VALUES)).flatmap(lambda name: st.tuples(st.just(name), st.sampled_from(VALUES[name]))),
    max_size=6,
)


def url_of(user: str, pairs: list[tuple[str, str]], spelling: str) -> str:
    # Values are sent as given, percent-signs and all, except spaces and commas, which are encoded.
    text = "&".join(f"{name}={quote(value, safe='%,')}" for name, value in pairs)
    return f"/{spelling}/user/{user}" + (f"?{text}" if pairs else "")


@pytest.mark.parametrize("live", [False, True], ids=["no live set", "a live set"])
def test_the_shortcut_answers_every_query_exactly_as_fastapi_does(client, live):
    if live:
        put = client.put(
            "/live", json={"streamers": [*GROUP_A[:3], *GROUP_B[:2]]}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert put.status_code == 200
    statuses = []

    @given(user=st.sampled_from(USERS), pairs=query, spelling=st.sampled_from(["recomendations", "recommendations"]))
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(user, pairs, spelling):
        quick, full = both(client, url_of(user, pairs, spelling))
        assert (quick.status_code, quick.headers.items(), quick.content) == (
            full.status_code,
            full.headers.items(),
            full.content,
        )
        statuses.append(quick.status_code)

    check()
    assert {200, 422} <= set(statuses)  # both kinds of answer were compared
    if not live:
        assert 409 in statuses  # live_only before any live set


def test_the_shortcut_counts_its_answers_in_the_metrics(client):
    def count(source: str) -> float:
        text = client.get("/metrics").text
        return value(text, "streamrec_requests_total", route="/recomendations/user/{user_id:path}", source=source)

    before = {source: count(source) for source in ("personal", "popular")}
    for _ in range(3):
        assert client.get("/recomendations/user/1?k=3").status_code == 200
        assert client.get("/recomendations/user/nobody?k=3").status_code == 200
    assert {source: count(source) - before[source] for source in before} == {"personal": 3, "popular": 3}

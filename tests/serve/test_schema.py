"""Property-based HTTP testing from the service's own OpenAPI schema (schemathesis), against
the real server: no 5xx for anything the schema admits, and every response conforms to the
schema it advertises.

Cases come from schemathesis' Hypothesis strategies and run under plain `@given`: its pytest
plugin (`from_fixture` / `parametrize`) fails under pytest 9 ('Function' object has no
attribute '_nodeid')."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.server.helpers import start_server, stop_server

OPERATIONS = [
    "GET /recomendations/user/{user_id}",
    "GET /recommendations/user/{user_id}",  # the same, spelled correctly
    "GET /streamers/{streamer_name}/similar",
    "GET /live",
    "PUT /live",
    "GET /health",
    "GET /metrics",
    "POST /admin/reload",
    "GET /ready",
    "GET /admin/fleet",
    "POST /events",
    "DELETE /admin/events",
]
NO_INPUT = ["GET /health", "GET /live", "GET /metrics", "GET /ready"]


@pytest.fixture(scope="module")
def api_schema(block_model_path, tmp_path_factory):
    proc, base = start_server(
        block_model_path,
        ADMIN_TOKEN="schema-test-admin-token",
        INGEST_TOKEN="schema-test-ingest-token",
        EVENTS_PATH=str(tmp_path_factory.mktemp("events")),
    )
    try:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")
    finally:
        stop_server(proc)


def test_schema_lists_the_operations_we_fuzz(api_schema):
    found = {f"{op.ok().method.upper()} {op.ok().path}" for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# Operations without input have nothing to make negative.
CASES = [(label, mode) for label in OPERATIONS for mode in schemathesis.GenerationMode]
CASES = [(label, mode) for label, mode in CASES if not (label in NO_INPUT and mode.value == "negative")]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label} {mode.value}" for label, mode in CASES])
def test_no_server_error_and_responses_match_the_schema(api_schema, label, mode):
    """Positive cases follow the schema; negative ones break it (bad k, bad booleans, ...)."""
    method, path = label.split(" ")
    operation = api_schema[path][method]
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # POST /events with the real token: its body parser meets whatever the schema admits (and not).
        headers = {"Authorization": "Bearer schema-test-ingest-token"} if label == "POST /events" else None
        response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance], headers=headers)
        calls.append(response.status_code)

    check()
    assert len(calls) >= (1 if label in NO_INPUT else 10)  # cases were really generated and sent
    if label == "POST /events":
        assert {202, 422} & set(calls), f"the token did not get the bodies to the parser: {sorted(set(calls))}"

"""The request tallies, added to the Prometheus metrics as prometheus-client's observe() would."""

from __future__ import annotations

from streamrec.serve.monitoring import Metrics, exposition
from tests.server.helpers import metric_value


def test_tallies_flush_into_the_counter_and_the_histogram_buckets():
    metrics = Metrics(enabled=True)
    route = "/test/tallies"
    for seconds in (0.0004, 0.001, 0.0011, 3.0):  # below, on and above a bound, past the last
        metrics.request(route, 200, "personal", seconds)
    metrics.request(route, 404, "", 0.002)
    before = exposition().decode()
    assert metric_value(before, "streamrec_requests_total", route=route) == 0  # tallied, not yet added
    metrics.flush()
    text = exposition().decode()
    assert metric_value(text, "streamrec_requests_total", route=route, status="200", source="personal") == 4
    assert metric_value(text, "streamrec_requests_total", route=route, status="404") == 1
    bucket = "streamrec_request_duration_seconds_bucket"
    cumulative = {"0.0005": 1, "0.001": 2, "0.0025": 4, "2.5": 4, "+Inf": 5}
    for le, n in cumulative.items():
        assert metric_value(text, bucket, route=route, le=le) == n, le
    assert metric_value(text, "streamrec_request_duration_seconds_count", route=route) == 5
    assert abs(metric_value(text, "streamrec_request_duration_seconds_sum", route=route) - 3.0045) < 1e-9
    metrics.flush()  # nothing new: nothing added twice
    assert metric_value(exposition().decode(), "streamrec_requests_total", route=route) == 5

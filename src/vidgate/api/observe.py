"""Per-request observation, in one pure-ASGI middleware: the request id for the logs, Prometheus request counts
and latencies by route template and status, and one access-log line per request.

It sits inside `ResponseHeadersMiddleware` (http.py), which makes the request id (`cf-ray`) before this runs.
Retrieve is polled constantly, so the per-request work is kept to plain Python: two clock reads, a dict lookup
and two list increments (no prometheus_client call, no lock: only the event loop's thread touches the counts).
The counts become Prometheus histograms when /metrics is scraped (`RequestStats.collect`).
bench/metrics_bench.py measures what this costs on the retrieve path.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate.logs import request_id_var

access_log = logging.getLogger("vidgate.api.access")

# Seconds. Retrieve answers in well under a millisecond; queue with media fetches and SSE streams take far longer.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BUCKET_LABELS = [*(repr(b) for b in DURATION_BUCKETS), "+Inf"]
# Status polls: most of an API's traffic, and the cheapest requests (bench/RESULTS.md). Answered 200 they are
# counted in /metrics but not written to the access log unless `access_log_polls` (a log line costs a third of
# a poll's CPU); any other status of theirs is logged.
POLL_ROUTES = frozenset({"/api/v1/video/retrieve", "/api/v1/video/jobs/{queue_id}"})
# No route matched (404s for any path a scanner tries): one label value, so the series stay bounded.
UNMATCHED = "unmatched"


class RequestStats(Collector):
    """Request counts and latency buckets of this API process, by (method, route template, status)."""

    def __init__(self) -> None:
        # Per series: a count per bucket (not cumulative; the last one is +Inf), then the sum of seconds.
        self._series: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        counts = self._series.get(key)
        if counts is None:
            counts = self._series[key] = [0] * (len(DURATION_BUCKETS) + 2)
        # bisect_left: a duration equal to a bound belongs to that bucket (Prometheus' `le`).
        counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        total = CounterMetricFamily("vidgate_http_requests", "HTTP requests answered by this API process",
                                    labels=labels)
        latency = HistogramMetricFamily("vidgate_http_request_duration_seconds",
                                        "Time from the request's arrival to the end of its response body",
                                        labels=labels)
        for (method, route, status), counts in sorted(self._series.items()):
            values = [method, route, str(status)]
            cumulative, buckets = 0.0, []
            for label, count in zip(_BUCKET_LABELS, counts[:-1], strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            total.add_metric(values, cumulative)
            latency.add_metric(values, buckets, counts[-1])
        yield total
        yield latency


class ObserveMiddleware:
    """Sets the log context's request id, and after each response records its route template, status and
    duration in `stats` (None: metrics off) and writes an access-log line (when `log_requests`).

    `routes` is the app's route list. The template comes from the endpoint the router put in the scope (Starlette's
    router names the endpoint there, not the route)."""

    def __init__(self, app: ASGIApp, stats: RequestStats | None, log_requests: bool, log_polls: bool,
                 routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.stats = stats
        self.log_requests = log_requests
        self.log_polls = log_polls
        self.routes = routes
        self.templates = self._templates()

    def _templates(self) -> dict[Callable[..., Any], str]:
        return {route.endpoint: route.path for route in self.routes
                if callable(getattr(route, "endpoint", None)) and hasattr(route, "path")}

    def template(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        found = self.templates.get(endpoint)
        if found is None:  # a route added after this middleware was built
            self.templates = self._templates()
            found = self.templates.get(endpoint, UNMATCHED)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        request_id = state.get("request_id") if state else None
        token = request_id_var.set(request_id)
        status = 500  # what the client gets if the app raises before answering (ServerErrorMiddleware's answer)

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            seconds = perf_counter() - start
            # The route's template (`/api/v1/video/jobs/{queue_id}`) is the label, never the path itself, so ids
            # do not make a series each.
            template = self.template(scope)
            if self.stats is not None:
                self.stats.observe(scope["method"], template, status, seconds)
            if self.log_requests and (self.log_polls or status != 200 or template not in POLL_ROUTES):
                self._log(scope, template, status, seconds)
            request_id_var.reset(token)

    @staticmethod
    def _log(scope: Scope, template: str, status: int, seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        # A signed download link is a credential for 24 h: the log names its route, not the token.
        path = template if "token" in scope.get("path_params", ()) else scope["path"]
        duration_ms = round(seconds * 1000, 2)
        method = scope["method"]
        # makeRecord + handle is what `info()` does, less looking up the caller's file and line in the stack
        # (which no format here writes): a few µs of every request.
        access_log.handle(access_log.makeRecord(
            access_log.name, logging.INFO, "", 0, "%s %s %d %.2f ms", (method, path, status, duration_ms), None,
            extra={"method": method, "path": path, "route": template, "status": status, "duration_ms": duration_ms}))

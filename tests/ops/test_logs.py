"""Structured logs: `vidgate serve` and its workers write one JSON object per line; a request's lines carry the
request id its response's `cf-ray` shows, a job's lines carry the job's id."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, t2v_body
from vidgate.logs import JsonFormatter, TextFormatter, job_context, request_id_var

# What `vidgate serve` prints once for the operator at its start: plain text on stdout, not log records.
BANNER = ("Created the first account.", "vg_", "vidgate listening on ", "vidgate 0.1.0 API node", "upscaler: ")


def records(server: LiveServer) -> list[dict[str, Any]]:
    assert server.log is not None
    found = []
    for line in server.log.read_text().splitlines():
        if not line.strip() or line.startswith(BANNER):
            continue
        record = json.loads(line)  # anything else that is not one JSON object fails here
        assert {"time", "level", "logger", "message"} <= set(record), line
        found.append(record)
    return found


def wait_for(server: LiveServer, predicate: Any, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = records(server)
        if predicate(found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"not logged within {timeout:.0f} s: {records(server)[-20:]}")


def test_serve_and_worker_lines_are_json_with_request_and_job_ids(live_server: LiveServer) -> None:
    with live_server.client() as client:
        queued = client.post("/video/queue", json=t2v_body())
        status = client.get("/video/jobs/no-such-job")
        metrics = httpx.get(f"{live_server.base_url}/metrics")
    assert queued.status_code == 200 and status.status_code == 404 and metrics.status_code == 200
    queue_id = queued.json()["queue_id"]
    seen = {r.headers["cf-ray"]: r for r in (queued, status, metrics)}

    found = wait_for(live_server, lambda found: any(
        r.get("job_id") == queue_id and r["message"] == f"job {queue_id} completed" for r in found))
    access = {r["request_id"]: r for r in found if r["logger"] == "vidgate.api.access"}
    for request_id, response in seen.items():
        line = access[request_id]
        assert line["level"] == "INFO" and line["method"] == response.request.method
        assert line["path"] == response.request.url.path and line["status"] == response.status_code
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert access[queued.headers["cf-ray"]]["route"] == "/api/v1/video/queue"
    job_lines = [r for r in found if queue_id in r["message"] and r["logger"] == "vidgate.worker"]
    assert len(job_lines) >= 2 and all(r["job_id"] == queue_id for r in job_lines)
    assert not [r for r in found if r["logger"] == "vidgate.worker" and "request_id" in r]
    node = [r for r in found if r["logger"] == "vidgate.worker" and " worker " in r["message"]]
    assert node and "job_id" not in node[0], "a worker's own lines carry no job id"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.ops.formatter")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_json_lines_carry_the_ids_in_effect_extra_fields_and_the_traceback(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JsonFormatter())
    token = request_id_var.set("abc-VGT")
    try:
        with job_context("job-1"):
            try:
                raise ValueError("boom\nsecond line")
            except ValueError:
                logger.exception("failed %s", "here", extra={"engine": "procedural", "path": object()})
        logger.info("after the job")
    finally:
        request_id_var.reset(token)
    logger.info("outside")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "failed here" and first["level"] == "ERROR" and first["logger"] == logger.name
    assert first["request_id"] == "abc-VGT" and first["job_id"] == "job-1" and first["engine"] == "procedural"
    assert "ValueError: boom" in first["exc_info"] and first["path"].startswith("<object object")
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00.000Z")
    assert second["request_id"] == "abc-VGT" and "job_id" not in second
    assert "request_id" not in third and "job_id" not in third


def test_text_lines_append_the_ids(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(TextFormatter())
    with job_context("job-2"):
        logger.warning("slow")
    logger.warning("plain")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING tests.ops.formatter: slow [job_id=job-2]")
    assert second.endswith("WARNING tests.ops.formatter: plain")

"""`GET /metrics` through HTTP: request counts by route template, and the cluster's jobs (queued, rendered, failed,
canceled) as workers move them, read from the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, api_for, t2v_body
from vidgate import migrate
from vidgate.settings import load_settings

ENGINE = "procedural"  # what wan-2.5-preview-text-to-video renders with


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class BrokenEngine:
    name = "broken"

    def render(self, spec: object, out_path: object, progress: object) -> None:
        raise RuntimeError("GPU on fire")


@pytest.mark.both_backends
async def test_job_numbers_follow_jobs_through_queue_render_and_failure(api: Api,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import vidgate.worker as worker_module

    key = await api.new_key()
    empty = await scrape(api)
    assert value(empty, "vidgate_jobs_stats_up") == 1
    assert value(empty, "vidgate_queue_depth") == 0
    assert value(empty, "vidgate_render_seconds_count", engine=ENGINE) == 0

    for prompt in ("one", "two"):
        assert (await api.post("/video/queue", t2v_body(prompt=prompt), key)).status_code == 200
    queued = await scrape(api)
    assert value(queued, "vidgate_queue_depth") == 2
    assert value(queued, "vidgate_jobs", engine=ENGINE, state="queued") == 2
    assert value(queued, "vidgate_queue_oldest_seconds") > 0

    await api.run_worker(max_jobs=1)
    rendered = await scrape(api)
    assert value(rendered, "vidgate_queue_depth") == 1
    assert value(rendered, "vidgate_jobs", engine=ENGINE, state="completed") == 1
    assert value(rendered, "vidgate_render_seconds_count", engine=ENGINE) == 1
    seconds = value(rendered, "vidgate_render_seconds_sum", engine=ENGINE)
    assert 0 < seconds < 120
    assert value(rendered, "vidgate_render_seconds_bucket", engine=ENGINE, le="+Inf") == 1
    assert value(rendered, "vidgate_engine_errors_total", engine=ENGINE) == 0

    # The other job fails every attempt: each failed attempt is an engine error, and the job ends failed.
    monkeypatch.setattr(worker_module, "engine_for", lambda name, **kw: BrokenEngine())
    await api.run_worker(max_jobs=1)
    once = await scrape(api)
    assert value(once, "vidgate_engine_errors_total", engine=ENGINE) == 1
    assert value(once, "vidgate_queue_depth") == 1, "back in the queue for another attempt"
    await api.run_worker(max_jobs=api.settings.max_attempts - 1)
    failed = await scrape(api)
    assert value(failed, "vidgate_jobs", engine=ENGINE, state="failed") == 1
    assert value(failed, "vidgate_engine_errors_total", engine=ENGINE) == api.settings.max_attempts
    assert value(failed, "vidgate_queue_depth") == 0
    assert value(failed, "vidgate_render_seconds_count", engine=ENGINE) == 1, "failures are not renders"


@pytest.mark.both_backends
async def test_a_job_canceled_after_a_failed_attempt_keeps_its_error_counted(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidgate.worker as worker_module

    key = await api.new_key()
    queue_id = (await api.post("/video/queue", t2v_body(), key)).json()["queue_id"]
    monkeypatch.setattr(worker_module, "engine_for", lambda name, **kw: BrokenEngine())
    await api.run_worker(max_jobs=1)
    assert value(await scrape(api), "vidgate_engine_errors_total", engine=ENGINE) == 1
    canceled = await api.client.post(f"/api/v1/video/jobs/{queue_id}/cancel",
                                     headers={"Authorization": f"Bearer {key}"})
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    after = await scrape(api)
    assert value(after, "vidgate_jobs", engine=ENGINE, state="canceled") == 1
    assert value(after, "vidgate_engine_errors_total", engine=ENGINE) == 1, "a counter never goes down"


JOB_SERIES = ("vidgate_jobs", "vidgate_queue_depth", "vidgate_render_seconds", "vidgate_engine_errors")


@pytest.mark.both_backends
async def test_the_upgrade_to_running_totals_counts_the_jobs_that_ended_before_it(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revision 0004 counts the ended jobs of an existing database once; what /metrics says is what it said with
    the totals kept as the jobs ended."""
    import vidgate.worker as worker_module

    key = await api.new_key()
    ids = [(await api.post("/video/queue", t2v_body(prompt=f"p{i}"), key)).json()["queue_id"] for i in range(5)]
    await api.run_worker(max_jobs=2)  # two completed
    monkeypatch.setattr(worker_module, "engine_for", lambda name, **kw: BrokenEngine())
    await api.run_worker(max_jobs=api.settings.max_attempts + 1)  # one failed, one with a failed attempt
    headers = {"Authorization": f"Bearer {key}"}
    for queue_id in ids:  # the one back in the queue (after a failed attempt) and one never run: canceled
        await api.client.post(f"/api/v1/video/jobs/{queue_id}/cancel", headers=headers)
    kept = await scrape(api)
    assert value(kept, "vidgate_jobs", engine=ENGINE, state="completed") == 2
    assert value(kept, "vidgate_jobs", engine=ENGINE, state="canceled") == 2

    url = api.settings.resolved_database_url
    command.downgrade(migrate.alembic_config(url), "0003")  # the totals are gone; the jobs stay
    command.upgrade(migrate.alembic_config(url), "0004")
    recounted = await scrape(api)
    jobs_only = {k: v for k, v in recounted.items() if k[0].startswith(JOB_SERIES)}
    assert jobs_only == {k: v for k, v in kept.items() if k[0].startswith(JOB_SERIES)}
    assert value(recounted, "vidgate_engine_errors_total", engine=ENGINE) == api.settings.max_attempts + 1


async def test_requests_are_counted_by_route_template_and_status(api: Api) -> None:
    key = await api.new_key()
    for _ in range(3):
        await api.client.get("/api/v1/video/jobs/no-such-job", headers={"Authorization": f"Bearer {key}"})
    await api.client.get("/api/v1/video/jobs/another-id", headers={"Authorization": f"Bearer {key}"})
    await api.post("/video/retrieve", {"model": "wan-2.5-preview-text-to-video", "queue_id": "x"}, key)
    await api.client.get("/no/such/path")
    samples = await scrape(api)
    route = {"method": "GET", "route": "/api/v1/video/jobs/{queue_id}", "status": "404"}
    assert value(samples, "vidgate_http_requests_total", **route) == 4, "one series for every job id"
    assert value(samples, "vidgate_http_request_duration_seconds_count", **route) == 4
    assert value(samples, "vidgate_http_request_duration_seconds_bucket", le="+Inf", **route) == 4
    assert value(samples, "vidgate_http_request_duration_seconds_sum", **route) > 0
    assert value(samples, "vidgate_http_requests_total", method="POST", route="/api/v1/video/retrieve",
                 status="404") == 1
    assert value(samples, "vidgate_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not [name for name, labels in samples if "no-such-job" in str(labels) or "/no/such" in str(labels)]
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with api_for(load_settings(data_dir=tmp_path / "data", metrics_enabled=False)) as api:
        assert (await api.client.get("/metrics")).status_code == 404
        assert (await api.client.get("/healthz")).status_code == 200

"""Server-Sent Events through a real HTTP server (uvicorn on a loopback port, a second API node on the same
database), on SQLite and PostgreSQL: a job's stream follows it to the end, and agrees with polling; the account
stream resumes after a dropped connection from Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import Api, free_port, t2v_body
from vidgate.api.app import create_app

pytestmark = pytest.mark.both_backends


@dataclass
class Event:
    id: int
    kind: str
    data: dict[str, Any]


@pytest.fixture
async def node(api: Api) -> AsyncIterator[str]:
    """Another API process on the same database, serving real HTTP: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(api.settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(serving, 10)


async def read_events(response: httpx.Response, until: int | None = None) -> AsyncIterator[Event]:
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Event(int(fields.get("id", "0")), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_a_job_stream_follows_it_to_completion_and_agrees_with_polling(api: Api, node: str) -> None:
    key = await api.new_key()
    auth = {"Authorization": f"Bearer {key}"}
    queued = await api.post("/video/queue", t2v_body(), key)
    queue_id = queued.json()["queue_id"]
    events: list[Event] = []
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", f"{node}/video/jobs/{queue_id}/events", headers=auth) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            worker = None
            async for event in read_events(response):
                events.append(event)
                if worker is None:  # the stream opened with the job's current state: now render it
                    worker = asyncio.ensure_future(api.run_worker(max_jobs=1))
            await worker
        polled = (await client.get(f"{node}/video/jobs/{queue_id}", headers=auth)).json()
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and events[0].data["status"] in ("queued", "running", "completed")
    assert "running" in kinds and kinds[-1] == "completed", kinds
    assert [e.id for e in events] == sorted({e.id for e in events}), "ids only grow"
    assert events[-1].data == polled, "the last event and a poll show the same job"


async def test_the_account_stream_resumes_from_last_event_id(api: Api, node: str) -> None:
    key = await api.new_key()
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("GET", f"{node}/video/events", headers=auth) as response:
            first = await api.post("/video/queue", t2v_body(), key)
            async for event in read_events(response):
                assert event.kind == "queued" and event.data["queue_id"] == first.json()["queue_id"]
                seen = event.id
                break  # the connection drops here
        second = await api.post("/video/queue", t2v_body(prompt="A second video"), key)
        await api.run_worker(max_jobs=2)
        resumed: dict[str, Event] = {}
        async with client.stream("GET", f"{node}/video/events", headers={**auth, "Last-Event-ID": str(seen)}) as again:
            async for event in read_events(again):
                assert event.id > seen
                resumed[event.data["queue_id"]] = event
                if len(resumed) == 2:
                    break
    assert set(resumed) == {first.json()["queue_id"], second.json()["queue_id"]}
    assert {e.kind for e in resumed.values()} == {"completed"}, "missed events: each job's newest"


async def test_another_accounts_job_has_no_stream(api: Api, node: str) -> None:
    owner, other = await api.new_key(), await api.new_key()
    queue_id = (await api.post("/video/queue", t2v_body(), owner)).json()["queue_id"]
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{node}/video/jobs/{queue_id}/events",
                                    headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 404

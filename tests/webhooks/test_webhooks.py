"""Webhooks end to end, on SQLite and PostgreSQL: the app runs with its lifespan (so its dispatcher sends), and a
real HTTP receiver on a loopback socket checks every signature with the `standardwebhooks` library, as a
client's receiver would, answering 401 to a bad one (which the tests would see as a failed delivery).

Nothing leaves loopback: names resolve through a stub resolver, and every TCP connect httpx makes goes through a
spy that refuses (before any packet) any address other than 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import Api, t2v_body
from vidgate.api.app import create_app
from vidgate.settings import Settings, load_settings

pytestmark = pytest.mark.both_backends

RETRY = [0.3, 0.6]  # three attempts in all: longer waits than the 0.2 s poll, so they show
PUBLIC_IP = "93.184.216.34"  # only ever handed to the vetting; the connect spy refuses it


# --- a receiver on loopback ----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers webhooks: `script[path]` lists the statuses of its next answers (then 200); `delays[path]` holds
    each answer that long. Every request is recorded with whether its signature verified with `secret`."""

    port: int = 0
    secret: str | None = None
    script: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> a Location to answer 307 with
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        try:
            Webhook(self.secret or "whsec_AAAA").verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self.lock:
            self.received.append(Received(path, headers, body, verified))
            planned = self.script.get(path)
            status = planned.pop(0) if planned else 200
        time.sleep(self.delays.get(path, 0))
        return status if verified else 401


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            if status == 307:
                self.send_header("Location", state.redirects.get(self.path, "/"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- loopback-only plumbing ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TCP connect httpx makes, recorded; anything but 127.0.0.1 is refused before a socket exists."""
    seen: list[str] = []
    real = anyio.connect_tcp

    async def spy(remote_host: str, remote_port: int, **kwargs: object) -> object:
        seen.append(str(remote_host))
        if remote_host != "127.0.0.1":
            raise OSError(f"test refuses to connect to {remote_host}")
        return await real(remote_host, remote_port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(anyio, "connect_tcp", spy)
    return seen


class StubResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def stub_dns(api: Api, answers: dict[str, list[str]]) -> StubResolver:
    resolver = StubResolver(answers)
    api.ctx.fetcher._resolver = resolver  # the app's one guarded fetcher: queue-time vetting and sending
    return resolver


# --- the app, running ----------------------------------------------------------------------------------------


def hook_settings(data_dir: Path, database_url: str | None, receiver: Receiver) -> Settings:
    return load_settings(data_dir=data_dir, database_url=database_url, x264_preset="ultrafast", lease_seconds=3.0,
                         idle_poll_seconds=0.2, media_fetch_allow_hosts=[f"127.0.0.1:{receiver.port}"],
                         webhook_retry_seconds=RETRY, webhook_poll_seconds=0.2, webhook_timeout_seconds=5.0)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    """The app with its lifespan running (the webhook dispatcher is a background task of it)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, app.state.ctx, settings)


@pytest.fixture
async def hooks(tmp_path: Path, database_url: str | None, receiver: Receiver) -> AsyncIterator[Api]:
    async with running_app(hook_settings(tmp_path / "data", database_url, receiver)) as api:
        yield api


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def secret_of(api: Api, key: str) -> str:
    response = await api.client.get("/api/v1/webhooks", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()["secret"]


async def queue(api: Api, key: str, **overrides: Any) -> str:
    response = await api.post("/video/queue", t2v_body(**overrides), key)
    assert response.status_code == 200, response.text
    return response.json()["queue_id"]


async def log_of(api: Api, key: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get("/api/v1/webhooks/deliveries", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settled(api: Api, key: str, count: int) -> list[dict[str, Any]]:
    """The account's `count` deliveries, once none is pending any more."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        nonlocal found
        found = (await log_of(api, key))["data"]
        return len(found) == count and all(d["status"] != "pending" for d in found)

    await until(check, f"{count} deliveries to settle")
    return found


# --- the tests ---------------------------------------------------------------------------------------------------


async def test_a_jobs_webhook_url_gets_its_signed_events(hooks: Api, receiver: Receiver) -> None:
    key = await hooks.new_key()
    receiver.secret = await secret_of(hooks, key)
    job_id = await queue(hooks, key, webhook_url=receiver.url("/job"))
    await hooks.run_worker()
    await until(lambda: len(receiver.at("/job")) == 3, "three events")

    got = sorted(receiver.at("/job"), key=lambda r: r.json["timestamp"])
    assert all(r.verified for r in got)
    assert [r.json["type"] for r in got] == ["video.job.queued", "video.job.running", "video.job.completed"]
    assert [r.json["data"]["status"] for r in got] == ["queued", "running", "completed"]
    assert {r.json["data"]["queue_id"] for r in got} == {job_id}
    assert got[0].json["data"]["queue_position"] == 1 and got[2].json["data"]["progress"] == 100
    polled = (await hooks.client.get(f"/api/v1/video/jobs/{job_id}", headers=auth(key))).json()
    completed = got[2].json["data"]
    assert set(completed) == set(polled), "a webhook carries the same view as GET /video/jobs/{id}"
    for name in ("status", "price_usd", "media_available", "created_at", "started_at", "finished_at", "error"):
        assert completed[name] == polled[name], name
    for r in got:  # the headers the Standard Webhooks spec names
        assert r.headers["webhook-id"].startswith("msg_") and r.headers["webhook-signature"].startswith("v1,")
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60

    log = await settled(hooks, key, 3)
    by_id = {d["id"]: d for d in log}
    for r in got:
        entry = by_id[r.headers["webhook-id"]]
        assert entry["status"] == "delivered" and entry["attempt_count"] == 1
        assert [a["status_code"] for a in entry["attempts"]] == [200]
        assert entry["payload"] == r.json and entry["url"] == receiver.url("/job")


async def test_the_account_endpoint_gets_every_job_of_the_account(hooks: Api, receiver: Receiver) -> None:
    key, other = await hooks.new_key(), await hooks.new_key()
    url = receiver.url("/account")
    put = await hooks.client.put("/api/v1/webhooks", json={"url": url}, headers=auth(key))
    assert put.status_code == 200, put.text
    receiver.secret = put.json()["secret"]
    assert (await hooks.client.get("/api/v1/webhooks", headers=auth(key))).json() == {"url": url,
                                                                                      "secret": receiver.secret}
    await queue(hooks, other)  # another account's job: not ours to hear about
    first = await queue(hooks, key)
    second = await queue(hooks, key, webhook_url=url)  # the same URL as the endpoint: one delivery, not two
    log = await settled(hooks, key, 2)
    assert {d["job_id"] for d in log} == {first, second} and {d["status"] for d in log} == {"delivered"}
    assert sorted(r.json["data"]["queue_id"] for r in receiver.at("/account")) == sorted([first, second])
    assert all(r.verified for r in receiver.at("/account"))

    removed = await hooks.client.put("/api/v1/webhooks", json={"url": None}, headers=auth(key))
    assert removed.json() == {"url": None, "secret": receiver.secret}, "removing the URL keeps the secret"
    await queue(hooks, key)
    assert len((await log_of(hooks, key))["data"]) == 2, "no endpoint, no webhook_url: no delivery"
    assert (await log_of(hooks, other))["data"] == []


async def test_a_failing_receiver_is_retried_until_it_answers(hooks: Api, receiver: Receiver) -> None:
    key = await hooks.new_key()
    receiver.secret = await secret_of(hooks, key)
    receiver.script["/flaky"] = [500, 500]
    await queue(hooks, key, webhook_url=receiver.url("/flaky"))
    [entry] = await settled(hooks, key, 1)
    assert entry["status"] == "delivered" and entry["attempt_count"] == 3
    assert [a["status_code"] for a in entry["attempts"]] == [500, 500, 200]
    got = receiver.at("/flaky")
    assert len(got) == 3 and all(r.verified for r in got)
    assert {r.headers["webhook-id"] for r in got} == {entry["id"]}, "a retry is the same message"
    assert len({r.body for r in got}) == 1, "and the same body"
    started = [datetime.fromisoformat(a["attempted_at"]).timestamp() for a in entry["attempts"]]
    assert all(b - a >= wait - 0.002 for a, b, wait in zip(started[:-1], started[1:], RETRY, strict=True)), started


async def test_a_redirect_is_a_failed_attempt_and_not_followed(hooks: Api, receiver: Receiver) -> None:
    key = await hooks.new_key()
    receiver.secret = await secret_of(hooks, key)
    receiver.script["/moved"] = [307]
    receiver.redirects["/moved"] = receiver.url("/elsewhere")
    await queue(hooks, key, webhook_url=receiver.url("/moved"))
    [entry] = await settled(hooks, key, 1)
    assert [a["status_code"] for a in entry["attempts"]] == [307, 200] and entry["status"] == "delivered"
    assert receiver.at("/elsewhere") == [], "a redirect's target was never vetted, so it is never requested"


async def test_a_receiver_that_never_answers_ends_failed_and_can_be_redelivered(hooks: Api,
                                                                                receiver: Receiver) -> None:
    key = await hooks.new_key()
    receiver.secret = await secret_of(hooks, key)
    receiver.script["/down"] = [503] * 3
    await queue(hooks, key, webhook_url=receiver.url("/down"))
    [entry] = await settled(hooks, key, 1)
    assert entry["status"] == "failed" and entry["next_attempt_at"] is None
    assert [a["status_code"] for a in entry["attempts"]] == [503] * (len(RETRY) + 1)
    await asyncio.sleep(3 * RETRY[0])
    assert len(receiver.at("/down")) == 3, "no attempt after the last"

    again = await hooks.client.post(f"/api/v1/webhooks/deliveries/{entry['id']}/redeliver", headers=auth(key))
    assert again.status_code == 202 and again.json()["status"] == "pending", again.text
    [entry] = await settled(hooks, key, 1)
    assert entry["status"] == "delivered" and entry["attempt_count"] == 4
    assert [a["status_code"] for a in entry["attempts"]] == [503, 503, 503, 200]

    # A delivered message can be sent again too: the same id, so the receiver can tell it is a repeat.
    await hooks.client.post(f"/api/v1/webhooks/deliveries/{entry['id']}/redeliver", headers=auth(key))
    await until(lambda: len(receiver.at("/down")) == 5, "the redelivery")
    [entry] = await settled(hooks, key, 1)
    assert entry["attempt_count"] == 5 and entry["status"] == "delivered"
    assert {r.headers["webhook-id"] for r in receiver.at("/down")} == {entry["id"]}


async def test_private_targets_are_refused_when_queued(hooks: Api, connects: list[str]) -> None:
    key = await hooks.new_key(balance_usd=10)
    account = await hooks.account_of(key)
    stub_dns(hooks, {"hooks.internal.test": ["10.0.0.7"], "hooks.example.com": [PUBLIC_IP],
                     "mixed.example.com": [PUBLIC_IP, "192.168.1.4"]})
    refused = {
        "https://10.1.2.3/hook": "private",
        "https://hooks.internal.test/hook": "resolves to a private",
        "https://mixed.example.com/hook": "resolves to a private",
        "https://127.0.0.1:1/hook": "private, loopback",
        "https://[::ffff:169.254.169.254]/latest": "private",
        "http://hooks.example.com/hook": "https",
        "ftp://hooks.example.com/hook": "https",
        "https://user:pw@hooks.example.com/hook": "credentials",
        "https://hooks.example.com/" + "a" * 2048: "2048",
        "https://nowhere.example.com/hook": "could not be resolved",
    }
    for url, reason in refused.items():
        response = await hooks.post("/video/queue", t2v_body(webhook_url=url), key)
        assert response.status_code == 400, (url, response.text)
        assert "webhook_url" in response.json()["error"] and reason in response.json()["error"], response.text
    wrong_type = await hooks.post("/video/queue", t2v_body(webhook_url=42), key)
    assert wrong_type.status_code == 400 and "webhook_url" in wrong_type.json()["error"]
    assert hooks.balance_and_ledger(account) == (10_000_000, 10_000_000), "nothing was charged"
    jobs = await hooks.client.get("/api/v1/video/jobs", headers=auth(key))
    assert jobs.json()["data"] == []

    put = await hooks.client.put("/api/v1/webhooks", json={"url": "https://hooks.internal.test/x"}, headers=auth(key))
    assert put.status_code == 400 and "url" in put.json()["error"], put.text
    assert (await hooks.client.get("/api/v1/webhooks", headers=auth(key))).json()["url"] is None
    ok = await hooks.post("/video/queue", t2v_body(webhook_url="https://hooks.example.com/hook"), key)
    assert ok.status_code == 200, "a public https target is accepted"
    assert connects == [], "vetting never connects"


async def test_a_target_that_turns_private_is_refused_when_sending(hooks: Api, connects: list[str]) -> None:
    key = await hooks.new_key()
    resolver = stub_dns(hooks, {"hooks.example.com": [PUBLIC_IP]})
    put = await hooks.client.put("/api/v1/webhooks", json={"url": "https://hooks.example.com/in"}, headers=auth(key))
    assert put.status_code == 200, put.text
    resolver.answers["hooks.example.com"] = ["10.0.0.9"]  # DNS changed since (rebinding)
    await queue(hooks, key)
    [entry] = await settled(hooks, key, 1)
    assert entry["status"] == "failed" and len(entry["attempts"]) == len(RETRY) + 1
    assert all(a["status_code"] is None and "private" in a["error"] for a in entry["attempts"])
    assert connects == [], "no connection was made to the private address"


async def test_rotating_the_secret_signs_later_attempts_with_the_new_one(hooks: Api, receiver: Receiver) -> None:
    key = await hooks.new_key()
    old = await secret_of(hooks, key)
    rotated = await hooks.client.post("/api/v1/webhooks/rotate-secret", headers=auth(key))
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_") and await secret_of(hooks, key) == new
    receiver.secret = new
    await queue(hooks, key, webhook_url=receiver.url("/rotated"))
    await settled(hooks, key, 1)
    [got] = receiver.at("/rotated")
    assert got.verified
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got.body, got.headers)


async def test_another_accounts_delivery_is_404(hooks: Api, receiver: Receiver) -> None:
    mine, theirs = await hooks.new_key(), await hooks.new_key()
    receiver.secret = await secret_of(hooks, theirs)
    receiver.delays["/slow"] = 1.5
    await queue(hooks, theirs, webhook_url=receiver.url("/slow"))
    await until(lambda: len(receiver.at("/slow")) == 1, "the first attempt to start")
    [entry] = (await log_of(hooks, theirs))["data"]
    path = f"/api/v1/webhooks/deliveries/{entry['id']}/redeliver"
    assert (await hooks.client.post(path, headers=auth(mine))).status_code == 404
    unknown = await hooks.client.post("/api/v1/webhooks/deliveries/msg_nothing/redeliver", headers=auth(theirs))
    assert unknown.status_code == 404
    busy = await hooks.client.post(path, headers=auth(theirs))
    assert busy.status_code == 409 and busy.json()["code"] == "DELIVERY_IN_FLIGHT", busy.text
    assert (await log_of(hooks, mine))["data"] == []
    await settled(hooks, theirs, 1)


async def test_the_log_pages_with_a_cursor(hooks: Api, receiver: Receiver) -> None:
    key = await hooks.new_key()
    receiver.secret = await secret_of(hooks, key)
    ids = [await queue(hooks, key, webhook_url=receiver.url("/paged")) for _ in range(3)]
    await settled(hooks, key, 3)
    seen, cursor = [], None
    while True:
        page = await log_of(hooks, key, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [d["job_id"] for d in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == ids[::-1]
    bad = await hooks.client.get("/api/v1/webhooks/deliveries", params={"cursor": "!!"}, headers=auth(key))
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


async def test_two_api_nodes_share_the_deliveries_and_send_each_once(tmp_path: Path, database_url: str | None,
                                                                     receiver: Receiver) -> None:
    settings = hook_settings(tmp_path / "data", database_url, receiver)
    async with running_app(settings) as one, running_app(settings) as two:
        key = await one.new_key()
        receiver.secret = await secret_of(one, key)
        receiver.delays["/shared"] = 0.05
        jobs = [await queue(one if i % 2 else two, key, webhook_url=receiver.url("/shared")) for i in range(8)]
        await settled(one, key, 8)
        got = receiver.at("/shared")
        assert sorted(r.json["data"]["queue_id"] for r in got) == sorted(jobs), "each delivery sent exactly once"
        assert all(r.verified for r in got)

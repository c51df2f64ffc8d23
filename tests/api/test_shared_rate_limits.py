"""Per-key rate limits shared by several API nodes through one Redis (VIDGATE_RATE_LIMIT_STORAGE_URL).

Each "node" is an in-process app with its own limiter and Redis connection pool; the nodes share one SQLite
data dir (the keys and jobs) and one throwaway `redis-server` on a loopback port. Without the binary the Redis
tests skip, unless VIDGATE_REQUIRE_REDIS=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import Api, api_for, free_port, t2v_body
from vidgate.api.app import create_app
from vidgate.api.ratelimit import RateLimitConfigError, RateLimiter
from vidgate.settings import Settings, load_settings

REQUIRE_ENV = "VIDGATE_REQUIRE_REDIS"


@dataclass
class RedisServer:
    """A `redis-server` on 127.0.0.1 that keeps nothing on disk; it can be killed and started again on its port."""

    binary: str
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.root / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.root)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log_text = (self.root / "redis.log").read_text()
                        raise RuntimeError(f"redis-server did not start:\n{log_text}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server not found (Debian: apt-get install redis-server); the shared rate-limit tests skip"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
        pytest.skip(reason)
    root = tmp_path / "redis"
    root.mkdir()
    server = RedisServer(binary, root, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@asynccontextmanager
async def nodes(settings: Settings, count: int = 2) -> AsyncIterator[list[Api]]:
    """`count` API nodes built from the same settings (one data dir, one rate-limit storage)."""
    async with AsyncExitStack() as stack:
        apis = [await stack.enter_async_context(api_for(settings)) for _ in range(count)]
        for api in apis:
            stack.push_async_callback(api.ctx.limiter.aclose)  # the tests' apps never run the lifespan
        yield apis


async def polled_job(api: Api, key: str) -> dict[str, str]:
    """A queued job's retrieve body: polling it is what the `retrieve` limit counts."""
    response = await api.post("/video/queue", t2v_body(), key)
    assert response.status_code == 200, response.text
    queued = response.json()
    return {"model": queued["model"], "queue_id": queued["queue_id"]}


def assert_rate_limited(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"error": "Rate limit exceeded"}
    assert response.headers["x-ratelimit-limit-requests"] == str(limit)
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-type"] == "requests"
    now_ms = time.time() * 1000
    assert now_ms < int(response.headers["x-ratelimit-reset-requests"]) <= now_ms + 61_000  # unix ms
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_limit_holds_across_api_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = load_settings(data_dir=tmp_path / "data", rate_limit_retrieve_per_min=3,
                             rate_limit_storage_url=redis_server.url)
    async with nodes(settings) as (a, b):
        assert a.ctx.limiter is not b.ctx.limiter
        key = await a.new_key()
        job = await polled_job(a, key)
        seen = [await a.post("/video/retrieve", job, key), await a.post("/video/retrieve", job, key),
                await b.post("/video/retrieve", job, key)]
        assert [r.status_code for r in seen] == [200, 200, 200], [r.text for r in seen]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in seen] == ["2", "1", "0"]
        assert_rate_limited(await b.post("/video/retrieve", job, key), limit=3)
        assert_rate_limited(await a.post("/video/retrieve", job, key), limit=3)

        # The count is per key: another key polling on either node starts its own window.
        other = await b.new_key()
        other_job = await polled_job(b, other)
        fresh = await a.post("/video/retrieve", other_job, other)
        assert fresh.status_code == 200, fresh.text
        assert fresh.headers["x-ratelimit-remaining-requests"] == "2"


async def test_memory_storage_counts_per_node(tmp_path: Path) -> None:
    """The default keeps the count in each API process: fine for one node, not shared between several."""
    assert Settings.model_fields["rate_limit_storage_url"].default == "memory://"
    settings = load_settings(data_dir=tmp_path / "data", rate_limit_retrieve_per_min=3,
                             rate_limit_storage_url="memory://")
    async with nodes(settings) as (a, b):
        key = await a.new_key()
        job = await polled_job(a, key)
        seen = [await a.post("/video/retrieve", job, key) for _ in range(3)]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in seen] == ["2", "1", "0"]
        assert_rate_limited(await a.post("/video/retrieve", job, key), limit=3)
        on_b = await b.post("/video/retrieve", job, key)
        assert on_b.status_code == 200, on_b.text
        assert on_b.headers["x-ratelimit-remaining-requests"] == "2"


async def test_redis_down_answers_503_then_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = load_settings(data_dir=tmp_path / "data", rate_limit_retrieve_per_min=10,
                             rate_limit_storage_url=redis_server.url)
    async with nodes(settings) as (a, b):
        key = await a.new_key()
        job = await polled_job(a, key)
        before = await a.post("/video/retrieve", job, key)  # node A now holds a pooled connection
        assert before.status_code == 200 and before.headers["x-ratelimit-remaining-requests"] == "9"

        redis_server.kill()
        for node in (a, b):  # A: its pooled connection breaks; B: it cannot connect at all
            started = time.monotonic()
            response = await node.post("/video/retrieve", job, key)
            assert response.status_code == 503, response.text
            assert set(response.json()) == {"error"}
            assert response.headers["Retry-After"] == "5"
            assert "x-ratelimit-remaining-requests" not in response.headers
            assert time.monotonic() - started < 3, "a dead Redis must be answered quickly, not retried for long"
        # The queue bucket counts in the same Redis, so a new job is refused the same way, not queued uncounted.
        assert (await b.post("/video/queue", t2v_body(), key)).status_code == 503

        redis_server.start()  # same port, empty (nothing is kept on disk): every window starts again
        for node in (a, b):
            response = await node.post("/video/retrieve", job, key)
            assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-remaining-requests"] == "8"


def test_unreachable_redis_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = load_settings(data_dir=tmp_path / "data", rate_limit_storage_url=dead)
    with pytest.raises(RateLimitConfigError, match="VIDGATE_RATE_LIMIT_STORAGE_URL") as raised:
        create_app(settings)
    assert "cannot reach Redis" in str(raised.value)
    assert "hunter2" not in str(raised.value), "the password stays out of the message"


@pytest.mark.parametrize("url", ["memcached://127.0.0.1:11211", "redis://127.0.0.1:notaport", "nonsense"])
def test_unsupported_storage_url_names_the_setting(url: str) -> None:
    with pytest.raises(RateLimitConfigError, match="VIDGATE_RATE_LIMIT_STORAGE_URL"):
        RateLimiter({"queue": 1}, url)

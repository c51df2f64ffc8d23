"""Shared fixtures: an in-process app over httpx's ASGI transport, funded API keys, and a real
`vidgate serve` process tree on loopback for the tests that kill and restart things."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection

from tests.postgres import REQUIRE_ENV, PostgresCluster, remove_cluster, start_cluster
from vidgate.accounts.keys import authenticate_key, create_api_key
from vidgate.accounts.ledger import balance_micros, create_account, credit, ledger_sum_micros, usd_to_micros
from vidgate.api.app import create_app
from vidgate.api.context import AppContext
from vidgate.settings import Settings, load_settings
from vidgate.worker import Worker

SHORT_PROMPT = "A red fox runs through fresh snow at dawn"


# --- the database backends -------------------------------------------------------------------------------
# A test module marked `pytestmark = pytest.mark.both_backends` runs each of its tests on SQLite and on a
# real PostgreSQL (a throwaway cluster, started once per session, a fresh database per test).

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: run the test on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("db_backend", BACKENDS, indirect=True)


@contextmanager
def cluster_or_skip() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster; the test is skipped, saying why, when there are no binaries (and fails
    then if VIDGATE_REQUIRE_POSTGRES=1, as in CI)."""
    cluster = start_cluster()
    if isinstance(cluster, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{cluster} ({REQUIRE_ENV}=1)")
        pytest.skip(cluster)
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    with cluster_or_skip() as cluster:
        yield cluster


@pytest.fixture
def own_postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, to stop and restart (the session's is shared)."""
    with cluster_or_skip() as cluster:
        yield cluster


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(db_backend: str, request: pytest.FixtureRequest) -> str | None:
    """None: the data dir's SQLite file (the default); else a fresh PostgreSQL database."""
    if db_backend == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database()


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return load_settings(data_dir=tmp_path / "data", x264_preset="ultrafast", lease_seconds=3.0,
                         idle_poll_seconds=0.2, database_url=database_url)


@dataclass
class Api:
    """An in-process vidgate app and an httpx client bound to it."""

    client: httpx.AsyncClient
    ctx: AppContext
    settings: Settings
    keys: list[str] = field(default_factory=list)

    async def new_key(self, balance_usd: float = 50.0) -> str:
        pepper = self.settings.resolved_secret_key

        def make(conn: Connection) -> str:
            account_id = create_account(conn, "test")
            if balance_usd:
                credit(conn, account_id, usd_to_micros(balance_usd), note="test")
            return create_api_key(conn, account_id, pepper)[1]

        return await self.ctx.db.write(make)

    async def account_of(self, key: str) -> str:
        owner = self.ctx.db.read_now(lambda conn: authenticate_key(conn, key, self.settings.resolved_secret_key))
        assert owner
        return owner.account_id

    def balance_and_ledger(self, account_id: str) -> tuple[int, int]:
        """The cached balance and the ledger's sum, which must always agree."""
        return self.ctx.db.read_now(
            lambda conn: (balance_micros(conn, account_id) or 0, ledger_sum_micros(conn, account_id))
        )

    def scalar(self, query: Any) -> Any:
        return self.ctx.db.read_now(lambda conn: conn.execute(query).scalar_one())

    async def post(self, path: str, json: object, key: str | None = None, **kwargs: object) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return await self.client.post(f"/api/v1{path}", json=json, headers=headers, **kwargs)  # type: ignore[arg-type]

    async def run_worker(self, max_jobs: int = 1, timeout: float = 60) -> None:
        """Render queued jobs in this process, with the same Worker class the worker processes run."""
        worker = Worker(self.settings, name=f"test-{os.getpid()}")
        await asyncio.wait_for(worker.run(max_jobs=max_jobs), timeout)


@asynccontextmanager
async def api_for(settings: Settings, base_url: str = "http://testserver") -> AsyncIterator[Api]:
    """An app built from `settings`, its schema created, with a client on httpx's ASGI transport."""
    app = create_app(settings)
    ctx: AppContext = app.state.ctx
    ctx.db.create_schema()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            yield Api(client, ctx, settings)
    finally:
        ctx.db.dispose()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with api_for(settings) as api:
        yield api


def t2v_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "wan-2.5-preview-text-to-video",
        "prompt": SHORT_PROMPT,
        "duration": "5s",
        "resolution": "480p",
        "aspect_ratio": "16:9",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# --- a real server process tree -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """`vidgate serve` running as a real process tree on a loopback port."""

    data_dir: Path
    port: int
    env: dict[str, str]
    workers: int = 1
    proc: subprocess.Popen[str] | None = None
    api_key: str | None = None
    log: Path | None = None
    _log_file: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = self.data_dir.parent / f"serve-{time.time_ns()}.log"
        out = self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidgate", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--workers", str(self.workers)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=self.env, start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"vidgate serve did not start:\n{self.log.read_text()}")
        key = re.search(r"^(vg_\S+)$", self.log.read_text(), re.MULTILINE)
        if key and self.api_key is None:
            self.api_key = key.group(1)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        finally:
            self._log_file.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.base_url}/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.api_key}"})


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    env = dict(os.environ, VIDGATE_X264_PRESET="ultrafast", VIDGATE_LEASE_SECONDS="2",
               VIDGATE_IDLE_POLL_SECONDS="0.2", VIDGATE_RATE_LIMIT_QUEUE_PER_MIN="0",
               VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN="0", PYTHONUNBUFFERED="1")
    server = LiveServer(data_dir=tmp_path / "data", port=free_port(), env=env)
    server.start()
    yield server
    server.stop()


# --- media inputs -----------------------------------------------------------------------------------------


@dataclass
class MediaServer:
    """A static file server on loopback for tests that give vidgate http(s) media URLs."""

    root: Path
    port: int

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[MediaServer]:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "media-server"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MediaServer(root, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def media_api(tmp_path: Path, media_server: MediaServer) -> AsyncIterator[Api]:
    """An app whose fetcher may reach the loopback media server (the operator allow-list setting)."""
    settings = load_settings(data_dir=tmp_path / "data", x264_preset="ultrafast", lease_seconds=3.0,
                             idle_poll_seconds=0.2, media_fetch_allow_hosts=[f"127.0.0.1:{media_server.port}"],
                             upscale_method="lanczos")
    async with api_for(settings) as api:
        yield api


def data_url(path: Path, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"

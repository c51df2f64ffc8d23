"""Failure drills (issue 12 item 7): a small deployment of real processes, broken on purpose under load.

Two API nodes (`vidgate serve --no-workers`) and three render workers (`vidgate worker`) share a throwaway
PostgreSQL cluster and an S3 bucket (moto's server), every one on a loopback port with its own data dir and the
same VIDGATE_SECRET_KEY. A client queues a job every LOAD_INTERVAL_S seconds, alternating between the API
nodes, and polls `/video/retrieve` as a client would. Meanwhile the drill `kill -9`s a worker mid-render (and
starts another, as an operator's process manager would), `kill -9`s an API node with requests in flight (and
restarts it on the same port), and restarts PostgreSQL once (`pg_ctl stop -m immediate` + start).

Afterwards, whatever the client saw, the books must balance: every accepted job completed exactly once, none
failed (the retries absorb the kills), every job in the database (also those whose answer was lost with the
killed API node) is charged exactly once and never refunded, every balance is its ledger's sum, and the bucket
holds exactly the completed jobs' videos: no orphan object, no job without its object.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import boto3
import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.pool import NullPool

from tests.conftest import free_port, t2v_body
from tests.postgres import REQUIRE_ENV, PostgresCluster, remove_cluster, start_cluster
from tests.storage.test_s3 import FAKE_AWS
from vidgate.accounts.keys import create_api_key
from vidgate.accounts.ledger import create_account, credit, usd_to_micros
from vidgate.db import accounts, jobs, ledger, open_database, psycopg_url

MODEL = "wan-2.5-preview-text-to-video"  # the cheapest render: 5 s of 480p, about a second or two here
PREFIX = "videos"  # the bucket prefix: objects are `videos/<jobs.media_key>`
LOAD_INTERVAL_S = 0.4
# When each fault is injected, in seconds after the load starts; the load stops at LOAD_SECONDS.
KILL_WORKER_AT, KILL_API_AT, RESTART_POSTGRES_AT, LOAD_SECONDS = 5.0, 9.0, 15.0, 25.0
DRAIN_TIMEOUT_S = 120.0
ACCOUNTS = 3
BURST = 20  # queue requests sent to the API node at once, just before it is killed
KEEP_ENV = "VIDGATE_DRILL_KEEP"  # =1: keep the processes' logs and data dirs, and say where


# --- the processes ----------------------------------------------------------------------------------------


@dataclass
class Node:
    """One `vidgate` process in a process group of its own (so a kill takes all of it), logging to a file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.log_dir / f"{self.name}.{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "vidgate", *self.args], stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, like a crash or the OOM killer: no shutdown code runs, leases are left dangling."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        text = "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for log in self.logs if log.exists())
        return text


async def wait_healthy(node: Node, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if not node.alive():
                raise AssertionError(f"{node.name} exited at start:\n{node.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{node.base_url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{node.name} did not answer /healthz:\n{node.log_tail()}")


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    port = free_port()
    with (log_dir / "moto.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **FAKE_AWS},
                                start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start:\n" + (log_dir / "moto.log").read_text()) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this drill's own: it is restarted mid-run, which the session's shared one must not be."""
    started = start_cluster()
    if isinstance(started, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{started} ({REQUIRE_ENV}=1)")
        pytest.skip(started)
    try:
        yield started
    finally:
        remove_cluster(started)


# --- what the client saw ----------------------------------------------------------------------------------


@dataclass
class Answer:
    """One /video/queue request: its HTTP status, or the transport error that replaced it."""

    node: str
    status: int | None
    queue_id: str | None = None
    retry_after: str | None = None
    error: str | None = None
    body: str = ""


@dataclass
class Client:
    """A client of the deployment: queues on either node, polls with retrieve, remembers every answer."""

    urls: list[str]
    keys: list[str]
    answers: list[Answer] = field(default_factory=list)
    retrieve_statuses: Counter[int | str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # answers that no fault here excuses (a 500, a 503 bare)
    videos: dict[str, bytes] = field(default_factory=dict)  # queue_id -> the MP4 retrieve returned
    key_of: dict[str, str] = field(default_factory=dict)  # queue_id -> the key that queued it
    _http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))

    async def queue(self, n: int, node: int | None = None) -> Answer:
        index = n % len(self.urls) if node is None else node
        key = self.keys[n % len(self.keys)]
        name = f"api{index}"
        try:
            response = await self._http.post(f"{self.urls[index]}/api/v1/video/queue", json=t2v_body(model=MODEL),
                                             headers={"Authorization": f"Bearer {key}"})
        except httpx.TransportError as exc:  # the node was killed with this request in flight, or is down
            answer = Answer(name, None, error=type(exc).__name__)
        else:
            answer = Answer(name, response.status_code, retry_after=response.headers.get("retry-after"),
                            body=response.text[:300] if response.status_code != 200 else "")
            if response.status_code == 200:
                answer.queue_id = response.json()["queue_id"]
                self.key_of[answer.queue_id] = key
            elif response.status_code != 503 or not answer.retry_after:
                self.unexpected.append(f"queue on {name}: {response.status_code} {answer.body}")
        self.answers.append(answer)
        return answer

    async def retrieve(self, queue_id: str, n: int, **extra: object) -> httpx.Response | None:
        """One poll; the MP4 is kept when it comes. None when no node answered."""
        url = self.urls[n % len(self.urls)]
        try:
            response = await self._http.post(f"{url}/api/v1/video/retrieve",
                                             json={"model": MODEL, "queue_id": queue_id, **extra},
                                             headers={"Authorization": f"Bearer {self.key_of[queue_id]}"})
        except httpx.TransportError as exc:
            self.retrieve_statuses[type(exc).__name__] += 1
            return None
        self.retrieve_statuses[response.status_code] += 1
        if response.status_code == 200 and response.headers["content-type"] == "video/mp4":
            self.videos[queue_id] = response.content
        elif response.status_code != 200 and not (response.status_code == 503 and "retry-after" in response.headers):
            self.unexpected.append(f"retrieve {queue_id}: {response.status_code} {response.text[:300]}")
        return response

    def accepted(self) -> list[str]:
        return [a.queue_id for a in self.answers if a.queue_id]

    async def aclose(self) -> None:
        await self._http.aclose()


async def steady_load(client: Client, stop: asyncio.Event) -> None:
    """A request every LOAD_INTERVAL_S whatever the answers take (a slow or dead node does not slow the load),
    plus a poller fetching the finished videos, as clients do."""
    pending: set[asyncio.Task[Any]] = set()
    n = 0
    while not stop.is_set():
        pending.add(asyncio.ensure_future(client.queue(n)))
        waiting = [q for q in client.accepted() if q not in client.videos]
        if waiting:
            pending.add(asyncio.ensure_future(client.retrieve(waiting[0], n)))
        pending = {t for t in pending if not t.done()}
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOAD_INTERVAL_S)
    if pending:
        await asyncio.gather(*pending)


# --- the database, read directly ----------------------------------------------------------------------------


def job_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(jobs))]


def rendering_job(engine: Engine, owners: dict[str, Node]) -> tuple[dict[str, Any], Node] | None:
    """A job one of our workers is rendering right now (leased, with progress reported), and that worker."""
    with engine.connect() as conn:
        rows = conn.execute(select(jobs).where(jobs.c.status == "PROCESSING", jobs.c.progress > 0)).all()
    for row in rows:
        node = owners.get(row.lease_owner or "")
        if node is not None and node.alive():
            return dict(row._mapping), node
    return None


def bucket_keys(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def assert_real_video(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.height == 480
        assert sum(1 for _ in container.decode(stream)) > 24, "a few seconds of decodable frames"


# --- the drill --------------------------------------------------------------------------------------------


async def test_kills_and_a_postgres_restart_under_load_lose_nothing_and_charge_once(
        cluster: PostgresCluster) -> None:
    root = Path(tempfile.mkdtemp(prefix="vidgate-drill-"))
    nodes: list[Node] = []
    try:
        with moto_server(root) as endpoint:
            await run_drill(cluster, root, endpoint, nodes)
    except BaseException:
        # What the processes said is the first thing to read when the drill fails.
        for node in nodes:
            print(node.log_tail())
        raise
    finally:
        for node in nodes:
            node.kill()
        if os.environ.get(KEEP_ENV) == "1":
            print(f"drill logs and data dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


async def run_drill(cluster: PostgresCluster, root: Path, endpoint: str, nodes: list[Node]) -> None:
    database_url = cluster.new_database()
    engine = create_engine(psycopg_url(database_url), poolclass=NullPool)  # no pooled connection outlives the restart
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"drill-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    secret = uuid.uuid4().hex + uuid.uuid4().hex  # shared by every node: keys and download links verify anywhere

    keys = create_funded_keys(database_url, secret)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    env.update(FAKE_AWS)
    env.update({
        "VIDGATE_DATABASE_URL": database_url, "VIDGATE_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "VIDGATE_S3_ENDPOINT_URL": endpoint, "VIDGATE_SECRET_KEY": secret, "VIDGATE_X264_PRESET": "ultrafast",
        # A killed worker's job is re-claimed two seconds later rather than thirty.
        "VIDGATE_LEASE_SECONDS": "2", "VIDGATE_IDLE_POLL_SECONDS": "0.5",
        "VIDGATE_RATE_LIMIT_QUEUE_PER_MIN": "0", "VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN": "0",
        "PYTHONUNBUFFERED": "1",
    })

    apis = []
    for i in range(2):
        port = free_port()
        apis.append(Node(f"api{i}", ["serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port),
                                     "--data-dir", str(root / f"api{i}")], env, root, port=port))
    workers = [new_worker(root, env, i) for i in range(3)]
    nodes.extend(apis + workers)
    for node in nodes:
        node.start()
    await asyncio.gather(*(wait_healthy(api) for api in apis))

    client = Client([api.base_url for api in apis], keys)
    stop = asyncio.Event()
    started = time.monotonic()
    load = asyncio.ensure_future(steady_load(client, stop))
    events: list[str] = []

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
        assert not load.done(), load.exception()

    try:
        # 1. A worker dies mid-render; a new one takes its place, as a process manager would start it.
        await at(KILL_WORKER_AT)
        owners = {f"{socket.gethostname()}-{w.pid}": w for w in workers}
        victim = None
        deadline = time.monotonic() + 15
        while victim is None and time.monotonic() < deadline:
            victim = await asyncio.to_thread(rendering_job, engine, owners)
            if victim is None:
                await asyncio.sleep(0.05)
        assert victim is not None, "no worker was ever caught rendering"
        killed_job, worker = victim
        worker.kill()
        events.append(f"killed worker pid {worker.pid} rendering {killed_job['id']} "
                      f"(attempt {killed_job['attempts']}, {killed_job['progress']:.0%})")
        replacement = new_worker(root, env, len(workers))
        workers.append(replacement)
        nodes.append(replacement)
        replacement.start()

        # 2. An API node dies with queue requests in flight to it; the operator restarts it on the same port.
        await at(KILL_API_AT)
        burst = [asyncio.ensure_future(client.queue(i, node=1)) for i in range(BURST)]
        # Once the first answer is back the node is busy with the others (authenticating, charging...): now.
        await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)
        apis[1].kill()
        lost = sum(1 for a in await asyncio.gather(*burst) if a.status is None)
        events.append(f"killed api1 with {len(burst)} queue requests in flight ({lost} got no answer)")
        # Restarted in the background: an API node takes several seconds to start on a busy machine, and the
        # drill goes on meanwhile (the client keeps sending it requests, which fail to connect until it is up).
        restarted = asyncio.ensure_future(restart_after(apis[1], 1.0))

        # 3. PostgreSQL crashes and comes back (immediate stop: no checkpoint, every connection cut).
        await at(RESTART_POSTGRES_AT)
        down = time.monotonic()
        await asyncio.to_thread(cluster.restart)
        events.append(f"restarted PostgreSQL ({time.monotonic() - down:.1f} s down)")

        await at(LOAD_SECONDS)
        await restarted
    finally:
        stop.set()
        await load

    # Drain: poll every accepted job through the API until it is a video; then nothing may be left in the queue
    # (jobs whose answer was lost with api1 included: nobody polls those, the workers still owe them).
    accepted = client.accepted()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    n = 0
    while time.monotonic() < deadline:
        waiting = [q for q in accepted if q not in client.videos]
        for queue_id in waiting[:8]:
            n += 1
            await client.retrieve(queue_id, n)
        open_jobs = [r for r in await asyncio.to_thread(job_rows, engine) if r["status"] in ("QUEUED", "PROCESSING")]
        if not waiting and not open_jobs:
            break
        await asyncio.sleep(0.3)
    drained_in = time.monotonic() - started
    rows = await asyncio.to_thread(job_rows, engine)
    by_status = Counter(r["status"] for r in rows)
    assert by_status.get("QUEUED", 0) + by_status.get("PROCESSING", 0) == 0, f"not drained: {by_status}"

    statuses = Counter(a.status if a.status is not None else a.error for a in client.answers)
    summary = (f"drill: {len(client.answers)} queue requests: {len(accepted)} accepted, {statuses.get(503, 0)} "
               f"refused 503, {sum(1 for a in client.answers if a.status is None)} without an answer "
               f"(connection errors); answers {dict(statuses)}; retrieve answers {dict(client.retrieve_statuses)}; "
               f"{len(rows)} jobs in the database ({len(rows) - len(accepted)} whose answer was lost), "
               f"{sum(1 for r in rows if r['attempts'] > 1)} needed a retry "
               f"(attempts {dict(Counter(r['attempts'] for r in rows))}); all done {drained_in:.0f} s after the "
               "load started")
    print("\n" + "\n".join(events) + "\n" + summary)

    # Every process the drill did not kill rode out the faults (a worker that exits on a database outage leaves
    # the queue to the others, and with no process manager, for good).
    exited = [f"{n.name} (exit {n.proc.returncode if n.proc else None}):\n{n.log_tail()}"
              for n in nodes if n is not worker and not n.alive()]
    assert not exited, "\n".join(exited)

    # What the client saw: only answers a fault explains (no 500, no 402/429, every 503 with Retry-After).
    assert not client.unexpected, client.unexpected
    assert statuses.get(503, 0) == sum(1 for a in client.answers if a.status == 503 and a.retry_after)

    # Every accepted job completed, and its video is a real one.
    ids = {r["id"]: r for r in rows}
    assert set(accepted) <= ids.keys(), "an accepted job is missing from the database"
    assert len(set(accepted)) == len(accepted), "one queue_id answered twice"
    assert by_status == {"COMPLETED": len(rows)}, f"every job completed, none failed: {by_status}"
    assert set(client.videos) == set(accepted)
    assert ids[killed_job["id"]]["attempts"] >= 2, "the killed worker's job was rendered again"
    for queue_id in (accepted[0], killed_job["id"] if killed_job["id"] in client.videos else accepted[-1]):
        assert_real_video(client.videos[queue_id])

    # Money: one CHARGE per job, for its price, no refund, no charge without its job; balances are ledger sums.
    with engine.connect() as conn:
        entries = [dict(r._mapping) for r in conn.execute(select(ledger).where(ledger.c.job_id.is_not(None)))]
        charges = Counter(e["job_id"] for e in entries if e["kind"] == "CHARGE")
        assert sorted(charges) == sorted(ids) and set(charges.values()) == {1}, "each job charged exactly once"
        assert not [e for e in entries if e["kind"] != "CHARGE"], "no job was refunded"
        for e in entries:
            assert e["amount_micros"] == -ids[e["job_id"]]["price_micros"] and e["account_id"] == \
                ids[e["job_id"]]["account_id"]
        sums = dict(conn.execute(select(ledger.c.account_id, func.sum(ledger.c.amount_micros))
                                 .group_by(ledger.c.account_id)).all())
        balances = dict(conn.execute(select(accounts.c.id, accounts.c.balance_micros)).all())
        assert balances == sums, "every balance is the sum of its ledger"

    # Storage: the bucket holds exactly the completed jobs' videos.
    expected = {f"{PREFIX}/{r['media_key']}" for r in rows}
    assert all(r["media_key"] for r in rows) and not any(r["media_deleted"] for r in rows)
    assert bucket_keys(s3, bucket) == expected, "no orphan object, no job without its object"

    # Completing a job removes its object.
    done = accepted[:2]
    for n, queue_id in enumerate(done):
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(f"{client.urls[n % 2]}/api/v1/video/complete",
                                       json={"model": MODEL, "queue_id": queue_id},
                                       headers={"Authorization": f"Bearer {client.key_of[queue_id]}"})
        assert response.status_code == 200 and response.json() == {"success": True}, response.text
    assert bucket_keys(s3, bucket) == expected - {f"{PREFIX}/{ids[q]['media_key']}" for q in done}
    await client.aclose()
    engine.dispose()


def create_funded_keys(database_url: str, secret: str) -> list[str]:
    """ACCOUNTS accounts with $1000 each and a key each, made as `vidgate keys create` would."""
    db = open_database(database_url)
    try:
        def make(conn: Any) -> list[str]:
            made = []
            for i in range(ACCOUNTS):
                account_id = create_account(conn, f"drill-{i}")
                credit(conn, account_id, usd_to_micros(1000), note="drill")
                made.append(create_api_key(conn, account_id, secret)[1])
            return made

        return db.write_now(make)
    finally:
        db.dispose()


async def restart_after(node: Node, delay: float) -> None:
    await asyncio.sleep(delay)
    node.start()
    await wait_healthy(node)


def new_worker(root: Path, env: dict[str, str], i: int) -> Node:
    return Node(f"worker{i}", ["worker", "--data-dir", str(root / f"worker{i}")], env, root)

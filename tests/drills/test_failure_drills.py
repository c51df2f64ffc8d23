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

Run it with `.venv/bin/pytest -q -s tests/drills` to see what was done and counted; VIDGATE_DRILL_KEEP=1 keeps
the processes' logs and data dirs. It needs PostgreSQL's binaries (see tests/postgres.py): without them it is
skipped, or fails with VIDGATE_REQUIRE_POSTGRES=1. No timing is asserted: a slow machine only makes it longer.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import boto3
import httpx
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.pool import NullPool

from tests.conftest import free_port, t2v_body
from tests.postgres import PostgresCluster
from tests.storage.moto import FAKE_AWS, moto_server
from vidgate.accounts.keys import create_api_key
from vidgate.accounts.ledger import create_account, credit, usd_to_micros
from vidgate.db import accounts, jobs, ledger, open_database, psycopg_url

MODEL = "wan-2.5-preview-text-to-video"  # the cheapest render: 5 s of 480p, about a second or two here
PREFIX = "videos"  # the bucket prefix: objects are `videos/<jobs.media_key>`
LOAD_INTERVAL_S = 0.4
# When each fault is injected, in seconds after the load starts. PostgreSQL restarts no earlier than
# RESTART_POSTGRES_AT and not before the processes restarted after the kills are up (a node refuses to start
# while the database is away, by design; on a busy two-core machine a start takes ten seconds or more). The load
# goes on until LOAD_SECONDS, and at least LOAD_AFTER_RESTART_S past the restart.
KILL_WORKER_AT, KILL_API_AT, RESTART_POSTGRES_AT, LOAD_SECONDS, LOAD_AFTER_RESTART_S = 4.0, 7.0, 13.0, 22.0, 5.0
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
        return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for log in self.logs if log.exists())


async def wait_started(worker: Node, timeout: float = 60) -> None:
    """Until the worker process is past its start-up checks (it logs its description line then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise AssertionError(f"{worker.name} exited at start:\n{worker.log_tail()}")
        if " worker " in worker.logs[-1].read_text(errors="replace"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{worker.name} did not start:\n{worker.log_tail()}")


async def wait_healthy(node: Node, timeout: float = 60) -> None:
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

    async def retrieve(self, queue_id: str, n: int) -> httpx.Response | None:
        """One poll, on either node; the MP4 is kept when it comes. None when no node answered."""
        url = self.urls[n % len(self.urls)]
        try:
            response = await self._http.post(f"{url}/api/v1/video/retrieve",
                                             json={"model": MODEL, "queue_id": queue_id},
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

    async def complete(self, queue_id: str, n: int) -> httpx.Response:
        return await self._http.post(f"{self.urls[n % len(self.urls)]}/api/v1/video/complete",
                                     json={"model": MODEL, "queue_id": queue_id},
                                     headers={"Authorization": f"Bearer {self.key_of[queue_id]}"})

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


@dataclass
class Deployment:
    """The processes of the drill, their shared settings, and direct views of the database and the bucket."""

    root: Path
    env: dict[str, str]
    engine: Engine
    s3: Any
    bucket: str
    nodes: list[Node] = field(default_factory=list)  # every process ever started, killed ones included
    apis: list[Node] = field(default_factory=list)
    workers: list[Node] = field(default_factory=list)

    def add_api(self) -> Node:
        i, port = len(self.apis), free_port()
        node = Node(f"api{i}", ["serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port),
                                "--data-dir", str(self.root / f"api{i}")], self.env, self.root, port=port)
        self.apis.append(node)
        self.nodes.append(node)
        node.start()
        return node

    def add_worker(self) -> Node:
        i = len(self.workers)
        node = Node(f"worker{i}", ["worker", "--data-dir", str(self.root / f"worker{i}")], self.env, self.root)
        self.workers.append(node)
        self.nodes.append(node)
        node.start()
        return node


async def test_kills_and_a_postgres_restart_under_load_lose_nothing_and_charge_once(
        own_postgres_cluster: PostgresCluster) -> None:
    cluster = own_postgres_cluster  # restarted mid-run, which the session's shared one must not be
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
    secret = uuid.uuid4().hex + uuid.uuid4().hex  # shared by every node: keys and download links verify anywhere
    keys = create_funded_keys(database_url, secret)
    bucket = f"drill-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
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
    # No pooled connection of ours outlives the PostgreSQL restart: each check opens its own.
    engine = create_engine(psycopg_url(database_url), poolclass=NullPool)
    deployment = Deployment(root, env, engine, s3, bucket, nodes=nodes)
    for _ in range(2):
        deployment.add_api()
    for _ in range(3):
        deployment.add_worker()
    await asyncio.gather(*(wait_healthy(api) for api in deployment.apis))

    client = Client([api.base_url for api in deployment.apis], keys)
    try:
        events, killed_worker, killed_job_id = await inject_faults_under_load(deployment, client, cluster)
        rows = await drain(client, engine)
        ids = {r["id"]: r for r in rows}
        killed_job = ids[killed_job_id]
        events.append(f"the killed worker's job: {killed_job['status']} after {killed_job['attempts']} attempt(s)")
        print("\n" + "\n".join(events) + "\n" + summary(client, rows))
        check_outcome(deployment, client, rows, killed_worker)
        await check_complete_removes_objects(deployment, client, rows)
    finally:
        await client.aclose()
        engine.dispose()


async def inject_faults_under_load(deployment: Deployment, client: Client,
                                   cluster: PostgresCluster) -> tuple[list[str], Node, str]:
    """Run the steady load for LOAD_SECONDS and break things on the way; what was done, in words."""
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
        owners = {f"{socket.gethostname()}-{w.pid}": w for w in deployment.workers}
        victim = None
        deadline = time.monotonic() + 15
        while victim is None and time.monotonic() < deadline:
            victim = await asyncio.to_thread(rendering_job, deployment.engine, owners)
            if victim is None:
                await asyncio.sleep(0.05)
        assert victim is not None, "no worker was ever caught rendering"
        job, worker = victim
        worker.kill()
        events.append(f"killed {worker.name} (pid {worker.pid}) rendering job {job['id']} "
                      f"(attempt {job['attempts']}, at {job['progress']:.0%})")
        replacement = asyncio.ensure_future(wait_started(deployment.add_worker()))

        # 2. An API node dies with queue requests in flight to it; the operator restarts it on the same port.
        await at(KILL_API_AT)
        api = deployment.apis[1]
        burst = [asyncio.ensure_future(client.queue(i, node=1)) for i in range(BURST)]
        # Once the first answer is back the node is busy with the others (authenticating, charging...): now.
        await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)
        api.kill()
        lost = sum(1 for a in await asyncio.gather(*burst) if a.status is None)
        events.append(f"killed {api.name} with {BURST} queue requests in flight ({lost} got no answer)")
        # Restarted in the background: an API node takes several seconds to start on a busy machine, and the
        # drill goes on meanwhile (the client keeps sending it requests, which fail to connect until it is up).
        restarted = asyncio.ensure_future(restart_after(api, 0.5))

        # 3. PostgreSQL crashes and comes back (immediate stop: no checkpoint, every connection cut).
        await at(RESTART_POSTGRES_AT)
        await asyncio.gather(replacement, restarted)
        down = time.monotonic()
        await asyncio.to_thread(cluster.restart)
        events.append(f"restarted PostgreSQL {down - started:.0f} s into the load ({time.monotonic() - down:.1f} s "
                      "down)")

        await at(max(LOAD_SECONDS, time.monotonic() - started + LOAD_AFTER_RESTART_S))
    finally:
        stop.set()
        await load
    return events, worker, job["id"]


async def drain(client: Client, engine: Engine) -> list[dict[str, Any]]:
    """Poll every accepted job through the API until it is a video, and wait until nothing is left in the queue
    (jobs whose answer was lost with the killed API node included: nobody polls those, the workers still owe
    them). Returns every job row."""
    accepted = client.accepted()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    n = 0
    while True:
        waiting = [q for q in accepted if q not in client.videos]
        for queue_id in waiting[:8]:
            n += 1
            await client.retrieve(queue_id, n)
        rows = await asyncio.to_thread(job_rows, engine)
        open_jobs = Counter(r["status"] for r in rows if r["status"] in ("QUEUED", "PROCESSING"))
        if not waiting and not open_jobs:
            return rows
        assert time.monotonic() < deadline, f"not drained in {DRAIN_TIMEOUT_S:.0f} s: {open_jobs}, " \
                                            f"{len(waiting)} accepted jobs not retrieved"
        await asyncio.sleep(0.3)


def summary(client: Client, rows: list[dict[str, Any]]) -> str:
    statuses = Counter(a.status if a.status is not None else a.error for a in client.answers)
    accepted = client.accepted()
    attempts = dict(Counter(r["attempts"] for r in rows))
    return (f"drill: {len(client.answers)} queue requests: {len(accepted)} accepted, {statuses.get(503, 0)} refused "
            f"with 503, {sum(1 for a in client.answers if a.status is None)} without an answer (connection "
            f"errors); queue answers {dict(statuses)}; retrieve answers {dict(client.retrieve_statuses)}; "
            f"{len(rows)} jobs in the database ({len(rows) - len(accepted)} whose answer was lost), "
            f"{sum(1 for r in rows if r['attempts'] > 1)} retried (jobs by attempts: {attempts})")


def check_outcome(deployment: Deployment, client: Client, rows: list[dict[str, Any]], killed_worker: Node) -> None:
    # Every process the drill did not kill rode out the faults: a worker that exits on a database outage leaves
    # the queue to the others, and with no process manager, for good.
    exited = [f"{n.name} (exit {n.proc.returncode if n.proc else None}):\n{n.log_tail()}"
              for n in deployment.nodes if n is not killed_worker and not n.alive()]
    assert not exited, "\n".join(exited)

    # What the client saw: only answers a fault explains (no 500, no 402/429, every 503 with Retry-After).
    assert not client.unexpected, client.unexpected

    # Every accepted job completed, none failed, and its video is a real one.
    accepted = client.accepted()
    ids = {r["id"]: r for r in rows}
    assert len(set(accepted)) == len(accepted), "one queue_id answered twice"
    assert set(accepted) <= ids.keys(), "an accepted job is missing from the database"
    assert Counter(r["status"] for r in rows) == {"COMPLETED": len(rows)}, "every job completed, none failed"
    assert set(client.videos) == set(accepted)
    retried = [r["id"] for r in rows if r["attempts"] > 1 and r["id"] in client.videos]
    for queue_id in {accepted[0], *retried[:1]}:
        assert_real_video(client.videos[queue_id])

    # Money: one CHARGE per job, for its price, and no refund; every balance is the sum of its ledger.
    with deployment.engine.connect() as conn:
        entries = [dict(r._mapping) for r in conn.execute(select(ledger).where(ledger.c.job_id.is_not(None)))]
        sums = dict(conn.execute(select(ledger.c.account_id, func.sum(ledger.c.amount_micros))
                                 .group_by(ledger.c.account_id)).all())
        balances = dict(conn.execute(select(accounts.c.id, accounts.c.balance_micros)).all())
    charges = Counter(e["job_id"] for e in entries if e["kind"] == "CHARGE")
    assert charges.keys() == ids.keys() and set(charges.values()) == {1}, "each job charged exactly once"
    assert [e for e in entries if e["kind"] != "CHARGE"] == [], "no job was refunded"
    for e in entries:
        job = ids[e["job_id"]]
        assert (e["account_id"], e["amount_micros"]) == (job["account_id"], -job["price_micros"])
    assert balances == sums, "every balance is the sum of its ledger"

    # Storage: the bucket holds exactly the completed jobs' videos: no orphan object, no job without its object.
    assert all(r["media_key"] and not r["media_deleted"] for r in rows)
    assert bucket_keys(deployment.s3, deployment.bucket) == {f"{PREFIX}/{r['media_key']}" for r in rows}


async def check_complete_removes_objects(deployment: Deployment, client: Client, rows: list[dict[str, Any]]) -> None:
    """`/video/complete` on two jobs (one per API node) deletes their objects, and only theirs."""
    before = bucket_keys(deployment.s3, deployment.bucket)
    media_key = {r["id"]: r["media_key"] for r in rows}
    done = client.accepted()[:2]
    for n, queue_id in enumerate(done):
        response = await client.complete(queue_id, n)
        assert response.status_code == 200 and response.json() == {"success": True}, response.text
    assert bucket_keys(deployment.s3, deployment.bucket) == before - {f"{PREFIX}/{media_key[q]}" for q in done}


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

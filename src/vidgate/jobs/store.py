"""The job store is the queue: jobs are claimed with a lease that the worker renews by heartbeat.

A worker that dies stops renewing; once its lease expires another worker claims the job again. Every write
that depends on holding the lease carries the lease token, so a stale worker can never complete or fail a job
that someone else now owns: a job is finished once and charged once (the charge is taken at queue time, in
the transaction that stores the job; a failed job is refunded in the transaction that fails it).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    Select,
    Update,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from vidgate.accounts.keys import KEY_OWNER_COLUMNS, KeyOwner, owner_of_key_row
from vidgate.accounts.ledger import charge_ctes, charge_for_job, refund_job
from vidgate.db import (
    JOBS_CHANNEL,
    Database,
    PreparedQuery,
    SqliteDatabase,
    accounts,
    api_keys,
    job_events,
    jobs,
    webhook_endpoints,
)
from vidgate.jobs.states import JobStatus, sources_of
from vidgate.jobs.totals import CANCELED_WHILE_QUEUED, count_ended
from vidgate.webhooks.outbox import queue_deliveries


@dataclass(frozen=True)
class Job:
    id: str
    account_id: str
    model: str
    status: JobStatus
    request_json: str
    engine: str
    price_micros: int
    private: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    execution_ms: int | None
    attempts: int
    lease_owner: str | None
    lease_token: str | None
    lease_expires_at: float | None
    progress: float
    error: str | None
    media_key: str | None
    media_deleted: bool
    download_revoked: bool
    resolution: str | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    request_sha256: str | None = None
    webhook_url: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any] | dict[str, Any]) -> Job:
        data = dict(row) if isinstance(row, dict) else dict(row._mapping)
        data["status"] = JobStatus(data["status"])
        for flag in ("private", "media_deleted", "download_revoked", "cancel_requested"):
            data[flag] = bool(data[flag])
        return cls(**data)

    @cached_property
    def request(self) -> dict[str, Any]:
        """The validated request, parsed when first needed (polling never needs it)."""
        return json.loads(self.request_json)


@dataclass(frozen=True)
class Claim:
    """A job a worker now holds, with the token that proves it."""

    job: Job
    token: str


@dataclass(frozen=True)
class Taken:
    """What a worker's claim found: the job it now holds (None: nothing to do), and the jobs whose workers died
    that the claim's sweep ended (failed on their last attempt, or canceled): a dead worker may have uploaded a
    video for one, which no job will ever point at."""

    claim: Claim | None
    ended: tuple[str, ...] = ()


_GET = select(jobs).where(jobs.c.id == bindparam("job_id"))
_GET_FAST = PreparedQuery(_GET)  # every retrieve poll runs it
_INSERT = PreparedQuery(insert(jobs).values({c.name: bindparam(c.name) for c in jobs.columns}))
# A poll's API key (its owner and balance) and its job, in one statement (`JobStore.get_with_key_owner`).
_KEY_AND_JOB = PreparedQuery(
    select(*KEY_OWNER_COLUMNS, *[c.label(f"job_{c.name}") for c in jobs.columns])
    .select_from(api_keys.join(accounts, accounts.c.id == api_keys.c.account_id)
                 .outerjoin(jobs, jobs.c.id == bindparam("job_id")))
    .where(api_keys.c.id == bindparam("key_id"))
)


def _queue_paid_statement() -> Insert:
    """PostgreSQL: a queued job without webhooks in one statement: the charge (accounts/ledger.py's
    `charge_ctes`), the job row, its `queued` event and the workers' NOTIFY. It writes one event row when the
    balance covered the price and the account has no webhook endpoint (whose deliveries the transaction path
    writes with the event), and nothing at all otherwise."""
    debit, entry = charge_ctes(unless=select(webhook_endpoints.c.account_id).where(
        webhook_endpoints.c.account_id == bindparam("account_id"), webhook_endpoints.c.url.is_not(None)).exists())
    # Typed parameters: in INSERT ... SELECT PostgreSQL cannot infer a NULL's type from the target column.
    job = insert(jobs).from_select(
        [c.name for c in jobs.columns],
        select(*[cast(bindparam(c.name), c.type) for c in jobs.columns]).select_from(debit),
    ).returning(jobs.c.id, jobs.c.account_id, jobs.c.created_at).cte("job")
    # A CTE that only SELECTs runs when read: joined to the job, it notifies exactly when a job was queued.
    notify = select(func.pg_notify(literal_column(f"'{JOBS_CHANNEL}'"), literal_column("''")).label("sent")).cte(
        "notify")
    return insert(job_events).from_select(
        ["job_id", "account_id", "kind", "created_at"],
        select(job.c.id, job.c.account_id, literal_column("'queued'"), job.c.created_at).select_from(job, notify),
    ).add_cte(debit, entry, job, notify)


_QUEUE_PAID = PreparedQuery(_queue_paid_statement(), postgres_only=True)
_CLAIMABLE = (
    select(jobs.c.id, jobs.c.status, jobs.c.started_at)
    .where(
        or_(
            jobs.c.status == JobStatus.QUEUED.value,
            and_(jobs.c.status == JobStatus.PROCESSING.value, jobs.c.lease_expires_at < bindparam("now")),
        )
    )
    .order_by(jobs.c.created_at)
    .limit(1)
    # PostgreSQL: a job another worker is claiming right now is skipped, not waited for (SQLite has one writer
    # at a time and renders nothing here).
    .with_for_update(skip_locked=True)
)
_HELD = and_(jobs.c.id == bindparam("job_id"), jobs.c.lease_token == bindparam("token"),
             jobs.c.status == JobStatus.PROCESSING.value)


# What jobs/totals.py counts of a job that ended, returned by the UPDATE that ends it.
_ENDED = (jobs.c.engine, jobs.c.attempts, jobs.c.started_at, jobs.c.finished_at, jobs.c.error)


def transition(to: JobStatus, *conditions: Any) -> Update:
    """The one way a job's status changes: an UPDATE that only matches jobs whose current status may move to
    `to` (jobs/states.py), so a finished job can never be re-opened, whatever the caller's other conditions."""
    return update(jobs).where(jobs.c.status.in_(sources_of(to)), *conditions).values(status=to.value)


# A job the client asked to cancel gets no more heartbeats: the worker learns it must stop (see heartbeat).
_HEARTBEAT = update(jobs).where(_HELD, jobs.c.cancel_requested.is_(False)).values(
    lease_expires_at=bindparam("expires"), progress=bindparam("progress"))


PROGRESS_EVENT_STEP = 0.01  # a heartbeat logs a progress event when progress moved at least this much


@dataclass(frozen=True)
class ClaimScope:
    """Which jobs a worker takes: its engines, and for engines that serve named models only (diffusers), those
    models; `models` narrows every engine to those ids. None: no limit."""

    engines: frozenset[str] | None = None
    model_engines: frozenset[str] = frozenset()
    engine_models: frozenset[str] = frozenset()
    models: frozenset[str] | None = None

    def query(self) -> Select[Any]:
        conditions = []
        if self.engines is not None:
            conditions.append(jobs.c.engine.in_(sorted(self.engines)))
        for engine in sorted(self.model_engines):
            conditions.append(or_(jobs.c.engine != engine, jobs.c.model.in_(sorted(self.engine_models))))
        if self.models is not None:
            conditions.append(jobs.c.model.in_(sorted(self.models)))
        return _CLAIMABLE.where(*conditions)


class JobStore:
    """Async facade over the job table; each method is one read or one write transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._scoped: dict[ClaimScope, Select[Any]] = {}

    async def create_paid_job(
        self, *, account_id: str, model: str, request: dict[str, Any], engine: str, price_micros: int,
        private: bool, resolution: str | None = None, idempotency: Idempotency | None = None,
        webhook_url: str | None = None,
    ) -> Queued:
        """Charge the account and store the job, in one transaction: no unpaid job, no jobless charge.

        With an idempotency key already used by this account: the same body gets that job back, charged once
        (nothing is written); another body raises IdempotencyConflict. Two requests with a new key racing on
        PostgreSQL: the loser's transaction hits the unique index, is rolled back whole, and finds the winner's."""
        job_id = str(uuid.uuid4())
        values = dict.fromkeys(jobs.columns.keys())
        values.update({
            "id": job_id, "account_id": account_id, "model": model, "status": JobStatus.QUEUED.value,
            "request_json": json.dumps(request), "engine": engine, "price_micros": price_micros, "private": private,
            "created_at": time.time(), "attempts": 0, "progress": 0.0, "media_deleted": False,
            "download_revoked": False, "resolution": resolution, "cancel_requested": False,
            "idempotency_key": idempotency.key if idempotency else None,
            "request_sha256": idempotency.body_sha256 if idempotency else None, "webhook_url": webhook_url,
        })

        if self.db.dialect == "postgresql" and webhook_url is None and (
                queued := await self._queue_in_one_statement(values, idempotency)):
            return queued

        def create(conn: Connection) -> Queued:
            if idempotency is not None and (earlier := idempotent_replay(conn, account_id, idempotency)):
                return earlier
            charge_for_job(conn, account_id, job_id, price_micros)
            _INSERT.execute(conn, values)
            record_event(conn, job_id, "queued", account_id=account_id)
            self.db.announce_job(conn)
            return Queued(job_id, replayed=False)

        try:
            return await self.db.write(create)
        except IntegrityError:
            if idempotency is None:
                raise
            return await self.db.write(create)

    async def _queue_in_one_statement(self, values: dict[str, Any], idempotency: Idempotency | None) -> Queued | None:
        """PostgreSQL, a job without webhooks: `_QUEUE_PAID` (charge, job, event, NOTIFY) as a transaction of its
        own. The debit locks the account's row; held only while the server runs the statement, so the requests
        of one busy account no longer wait for each other's round trips (bench/RESULTS.md). None when it wrote
        nothing (the balance is short, or the account has a webhook endpoint): the transaction path decides."""
        job_id = values["id"]
        if idempotency is not None and (earlier := await self.db.read(
                lambda conn: idempotent_replay(conn, values["account_id"], idempotency))):
            return earlier
        try:
            written = await self.db.write_one(_QUEUE_PAID, {**values, "job_id": job_id})
        except IntegrityError:
            # A run retried after a lost connection meets its first run's job; else a concurrent request with the
            # same idempotency key won, and the transaction path finds its job.
            if await self.get(job_id) is not None:
                return Queued(job_id, replayed=False)
            if idempotency is None:
                raise
            return None
        return Queued(job_id, replayed=False) if written == 1 else None

    async def get(self, job_id: str, *, cached: bool = False) -> Job | None:
        """The job, or None. `cached` (the retrieve poll, on SQLite, after `db.refresh_row_cache()` in the same
        request): from the process's poll cache, so an idle server answers polls without a lookup; a commit
        anywhere empties that cache first (db.py)."""

        def read(conn: Connection) -> Job | None:
            row = _GET_FAST.first(conn, {"job_id": job_id})
            return Job.from_row(row) if row else None

        if cached and isinstance(self.db, SqliteDatabase):
            return self.db.read_cached(("job", job_id), read)
        row = await self.db.lookup(_GET_FAST, {"job_id": job_id})
        return Job.from_row(row) if row else None

    async def get_with_key_owner(self, job_id: str, key_id: str, digest: str) -> tuple[KeyOwner | None, Job | None]:
        """The owner of an API key (as `accounts.keys.look_up_key_owner`) and a job, in one lookup: what every
        poll reads, at the cost of one (on PostgreSQL a round trip and the statement's CPU are most of a poll's).
        The job comes whoever owns it: the caller checks that its owner is the key's."""
        row = await self.db.lookup(_KEY_AND_JOB, {"key_id": key_id, "job_id": job_id}) if key_id else None
        owner = owner_of_key_row(row, digest)
        if owner is None or row is None or row["job_id"] is None:
            return owner, None
        return owner, Job.from_row({c.name: row[f"job_{c.name}"] for c in jobs.columns})

    async def claim_next(self, owner: str, lease_seconds: float, max_attempts: int,
                         scope: ClaimScope | None = None) -> Claim | None:
        """Take the oldest queued job in `scope`, or one whose worker's lease ran out, and lease it to `owner`."""
        return (await self.take_next(owner, lease_seconds, max_attempts, scope)).claim

    async def take_next(self, owner: str, lease_seconds: float, max_attempts: int,
                        scope: ClaimScope | None = None) -> Taken:
        """`claim_next`, and the jobs of dead workers that its sweep ended (see `Taken`)."""
        query = _CLAIMABLE
        if scope is not None:
            if scope not in self._scoped:
                self._scoped[scope] = scope.query()
            query = self._scoped[scope]

        def claim(conn: Connection) -> Taken:
            now = time.time()
            ended = (*_fail_exhausted(conn, now, max_attempts), *_cancel_abandoned(conn, now))
            candidate = conn.execute(query, {"now": now}).first()
            if candidate is None:
                return Taken(None, ended)
            token = uuid.uuid4().hex
            conn.execute(
                transition(JobStatus.PROCESSING, jobs.c.id == candidate.id, jobs.c.status == candidate.status)
                .values(
                    attempts=jobs.c.attempts + 1, lease_owner=owner,
                    lease_token=token, lease_expires_at=now + lease_seconds,
                    started_at=candidate.started_at or now, progress=0.0,
                )
            )
            record_event(conn, candidate.id, "running")
            return Taken(Claim(Job.from_row(conn.execute(_GET, {"job_id": candidate.id}).one()), token), ended)

        return await self.db.write(claim)

    async def heartbeat(self, job_id: str, token: str, lease_seconds: float, progress: float) -> bool:
        """Extend the lease and record progress; False means the render must stop: the lease was lost, or the
        client canceled the job (which this heartbeat then settles: canceled and refunded, see `cancel`)."""
        params = {"job_id": job_id, "token": token, "expires": time.time() + lease_seconds, "progress": progress}

        def beat(conn: Connection) -> bool:
            before = conn.execute(select(jobs.c.progress).where(jobs.c.id == job_id)).scalar_one_or_none()
            if conn.execute(_HEARTBEAT, params).rowcount == 1:
                if before is None or abs(progress - before) >= PROGRESS_EVENT_STEP:
                    record_event(conn, job_id, "progress")
                return True
            _cancel_and_refund(conn, job_id, token, "canceled by the client while running")
            return False

        return await self.db.write(beat)

    async def complete(self, job_id: str, token: str, media_key: str) -> bool:
        def complete(conn: Connection) -> bool:
            row = conn.execute(select(jobs.c.created_at).where(jobs.c.id == job_id)).first()
            if row is None:
                return False
            now = time.time()
            ended = conn.execute(
                transition(JobStatus.COMPLETED, _HELD).values(
                    finished_at=now, media_key=media_key, progress=1.0,
                    execution_ms=int((now - row.created_at) * 1000), lease_token=None, lease_expires_at=None,
                ).returning(*_ENDED),
                {"job_id": job_id, "token": token},
            ).first()
            if ended is None:
                return False
            count_ended(conn, ended, JobStatus.COMPLETED)
            record_event(conn, job_id, "completed")
            return True

        return await self.db.write(complete)

    async def fail_attempt(self, job_id: str, token: str, error: str, *, max_attempts: int,
                           retryable: bool = True) -> JobStatus | None:
        """Record a failed attempt: back to the queue while attempts remain, else FAILED and refunded."""

        def fail(conn: Connection) -> JobStatus | None:
            held = {"job_id": job_id, "token": token}
            row = conn.execute(select(jobs.c.attempts, jobs.c.cancel_requested).where(_HELD), held).first()
            if row is None:
                return None  # the lease is gone; whoever holds the job now decides
            if row.cancel_requested:
                _cancel_and_refund(conn, job_id, token, "canceled by the client while running")
                return JobStatus.CANCELED
            if retryable and row.attempts < max_attempts:
                conn.execute(
                    transition(JobStatus.QUEUED, _HELD).values(
                        lease_token=None, lease_owner=None, lease_expires_at=None, error=error,
                    ),
                    held,
                )
                record_event(conn, job_id, "queued")
                return JobStatus.QUEUED
            _fail_and_refund(conn, job_id, token, error)
            return JobStatus.FAILED

        return await self.db.write(fail)

    async def mark_media_deleted(self, job_id: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(media_deleted=True)))

    async def revoke_download(self, job_id: str) -> None:
        await self.db.write(lambda conn: conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(download_revoked=True)))


def _expired_leases(conn: Connection, now: float, *conditions: Any) -> list[str]:
    """Running jobs whose worker stopped renewing its lease (it died), among those matching `conditions`."""
    return [row.id for row in conn.execute(select(jobs.c.id).where(
        jobs.c.status == JobStatus.PROCESSING.value, jobs.c.lease_expires_at < now, *conditions))]


def _fail_exhausted(conn: Connection, now: float, max_attempts: int) -> list[str]:
    """Jobs whose worker died on their last allowed attempt fail now, and are refunded; their ids."""
    return [job_id for job_id in _expired_leases(conn, now, jobs.c.attempts >= max_attempts)
            if _fail_and_refund(conn, job_id, None, "worker lost (lease expired) on the last attempt")]


def _cancel_abandoned(conn: Connection, now: float) -> list[str]:
    """Jobs canceled while running whose worker died before it could stop: canceled and refunded now; their
    ids."""
    return [job_id for job_id in _expired_leases(conn, now, jobs.c.cancel_requested.is_(True))
            if _cancel_and_refund(conn, job_id, None, "canceled by the client while running")]


def _end_and_refund(conn: Connection, job_id: str, to: JobStatus, held: list[Any], *, error: str, note: str,
                    **values: Any) -> bool:
    """End an unfinished job as FAILED or CANCELED (only from a state that may move there, and only while
    `held`'s conditions hold) and refund it in full, with its event: a job that did not finish costs nothing."""
    conditions = [jobs.c.id == job_id, jobs.c.status.in_(sources_of(to)), *held]
    row = conn.execute(select(jobs.c.account_id, jobs.c.price_micros).where(*conditions)).first()
    if row is None:
        return False
    ended = conn.execute(transition(to, *conditions).values(
        finished_at=time.time(), error=error, lease_token=None, lease_expires_at=None, **values,
    ).returning(*_ENDED)).first()
    # On PostgreSQL another worker may have ended it between our read and our update: refund only our own.
    if ended is None:
        return False
    count_ended(conn, ended, to)
    record_event(conn, job_id, to.value.lower(), account_id=row.account_id)
    if row.price_micros:
        refund_job(conn, row.account_id, job_id, row.price_micros, note=note[:500])
    return True


def _fail_and_refund(conn: Connection, job_id: str, token: str | None, error: str) -> bool:
    """Failed for good: held by `token`, or by nobody (its worker died)."""
    held = [jobs.c.lease_token == token] if token is not None else []
    return _end_and_refund(conn, job_id, JobStatus.FAILED, held, error=error, note=f"refund: {error}")


def _cancel_and_refund(conn: Connection, job_id: str, token: str | None, reason: str) -> bool:
    """Canceled by the client: queued; or running, held by `token` (whose heartbeat saw the request) or by
    nobody."""
    held = [jobs.c.lease_token == token, jobs.c.cancel_requested.is_(True)] if token is not None else []
    return _end_and_refund(conn, job_id, JobStatus.CANCELED, held, error=reason, note="refund: canceled",
                           cancel_requested=True)


class JobFinished(Exception):
    """Cancel of a job that is already completed, failed or canceled."""

    def __init__(self, status: JobStatus) -> None:
        super().__init__(status.value)
        self.status = status


def cancel_job(conn: Connection, job_id: str, account_id: str) -> JobStatus | None:
    """The client's cancel: a queued job is canceled and refunded at once; a running one is marked, and its
    worker stops at its next heartbeat (a few seconds), cancels and refunds it (or, should the worker be dead,
    the next claim does once its lease ran out). None: no such job of this account."""
    row = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id, jobs.c.account_id == account_id)).first()
    if row is None:
        return None
    status = JobStatus(row.status)
    if status is JobStatus.QUEUED and _cancel_and_refund(conn, job_id, None, CANCELED_WHILE_QUEUED):
        return JobStatus.CANCELED
    if status is JobStatus.PROCESSING:
        conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.PROCESSING.value)
                     .values(cancel_requested=True))
        return JobStatus.PROCESSING
    raise JobFinished(status)


@dataclass(frozen=True)
class Idempotency:
    """A client's Idempotency-Key and the SHA-256 of the body it came with."""

    key: str
    body_sha256: str


@dataclass(frozen=True)
class Queued:
    job_id: str
    replayed: bool  # an earlier request with the same Idempotency-Key made it


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another body."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def idempotent_replay(conn: Connection, account_id: str, idempotency: Idempotency) -> Queued | None:
    row = conn.execute(
        select(jobs.c.id, jobs.c.request_sha256)
        .where(jobs.c.account_id == account_id, jobs.c.idempotency_key == idempotency.key)
    ).first()
    if row is None:
        return None
    if row.request_sha256 != idempotency.body_sha256:
        raise IdempotencyConflict(idempotency.key)
    return Queued(row.id, replayed=True)


def record_event(conn: Connection, job_id: str, kind: str, *, account_id: str | None = None) -> None:
    """Append to the job's event log (read by the SSE streams), inside the caller's transaction, with the
    event's webhook deliveries (webhooks/outbox.py): they exist exactly when the event does."""
    now = time.time()
    if account_id is not None:
        conn.execute(insert(job_events).values(job_id=job_id, account_id=account_id, kind=kind, created_at=now))
    else:
        conn.execute(insert(job_events).from_select(
            ["job_id", "account_id", "kind", "created_at"],
            select(jobs.c.id, jobs.c.account_id, literal(kind), literal(now)).where(jobs.c.id == job_id),
        ))
    queue_deliveries(conn, job_id, kind, now)

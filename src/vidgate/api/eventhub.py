"""One per API process: reads the job event log (every job change writes it, in the same transaction, on any API
node or worker) and fans each new event out to the live streams that follow that job or account. One reader
however many streams are open; it reads only while someone listens.

Events go out in id order, so that a client's `Last-Event-ID: n` means "everything up to n": a stream that
resumes from n misses nothing older. On PostgreSQL ids are handed out at insert and transactions commit in any
order, so the hub may read id n+1 while n's transaction is still running: n is a gap, and what came after it is
held until n appears, or until PostgreSQL shows that every transaction that was running when n was missed has
ended (`pg_current_snapshot()`: then n was rolled back and never will). That horizon is the whole cluster's, so a
long transaction of anything else on it would hold every gap: after HOLD_SECONDS the events behind a gap go
anyway, and the gap itself is still looked for until GAP_WAIT_SECONDS (sent late, out of order, if it comes;
vidgate's own transactions last milliseconds). SQLite's writers commit one at a time, in id order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from vidgate.db import Database
from vidgate.jobs.events import (
    Horizon,
    JobEvent,
    event_ids_between,
    events_after,
    events_with_ids,
    newest_event_id,
    transaction_horizon,
)

log = logging.getLogger("vidgate.events")

POLL_SECONDS = 0.1  # how often the hub reads the log while anyone is listening (one indexed query)
HOLD_SECONDS = 2.0  # the longest events wait behind an id whose transaction may still commit
GAP_WAIT_SECONDS = 30.0  # how long such an id is still looked for (then it was rolled back)
MAX_GAP_IDS = 1000  # a jump of more ids than this (a sequence moved on after a failover) is not waited for
FRAMES_KEPT = 256  # rendered events kept for the streams still to send them
MAX_BACKLOG = 1000  # events queued for one slow stream before it is closed (its client resumes by id)


@dataclass
class Gap:
    """An id the hub passed without reading it: its transaction may still commit."""

    since: float  # time.monotonic() when first missed
    # A transaction id above the one holding this id (PostgreSQL's next transaction id just after the read that
    # missed it); once every transaction below it has ended and the id is still not there, it never will be.
    bound: int | None = None
    passed: bool = False  # held what came after it for HOLD_SECONDS; no longer does


@dataclass(frozen=True)
class LogRead:
    events: list[JobEvent]
    before: Horizon | None  # the running transactions just before the read
    after: Horizon | None  # and just after it


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(MAX_BACKLOG)

    def deliver(self, event: JobEvent | None) -> bool:
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False


@dataclass(frozen=True)
class LogEnd:
    newest: int  # the newest event id
    present: frozenset[int]  # the ids of the MAX_GAP_IDS before it that exist
    after: Horizon | None  # the running transactions just after the read


def read_log_end(conn: Connection) -> LogEnd:
    newest = newest_event_id(conn)
    present = frozenset(event_ids_between(conn, max(0, newest - MAX_GAP_IDS), newest))
    return LogEnd(newest, present, transaction_horizon(conn))


class EventHub:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._followers: defaultdict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._seen = 0  # the newest event id read
        self._released = 0  # every id up to this was sent to the streams, or never will exist
        self._gaps: dict[int, Gap] = {}  # ids below `_seen` not read yet
        self._held: dict[int, JobEvent] = {}  # read, waiting for an older gap
        self._frames: OrderedDict[tuple[int, str], asyncio.Future[bytes]] = OrderedDict()
        self._wake = asyncio.Event()
        self._started: asyncio.Future[None] | None = None

    @property
    def released_through(self) -> int:
        """Every event id up to this has gone to the streams that followed then (or never will exist); a stream
        that starts following now reads those from the log and gets the ones after from the hub."""
        return self._released

    def poke(self) -> None:
        """This process just committed a job change: read the log now rather than at the next poll."""
        self._wake.set()

    async def frame(self, event: JobEvent, variant: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """The event as sent, rendered once however many streams send it (`variant`: what else the bytes depend
        on, the base URL of download links)."""
        key = (event.id, variant)
        pending = self._frames.get(key)
        if pending is None:
            pending = self._frames[key] = asyncio.ensure_future(render())
            while len(self._frames) > FRAMES_KEPT:
                self._frames.popitem(last=False)
        return await asyncio.shield(pending)

    @contextlib.asynccontextmanager
    async def follow(self, kind: str, key: str) -> AsyncIterator[Subscription]:
        """Receive the events of a job (`kind` "job") or an account ("account") while inside.

        Inside means the hub's cursor was read before: whatever the caller reads from the log next (its snapshot
        of what it missed) and every event after the cursor reach it, so no event falls between the two."""
        subscription = Subscription()
        self._followers[(kind, key)].add(subscription)
        if self._task is None or self._task.done():
            self._started = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run(self._started))
        try:
            assert self._started is not None
            await asyncio.shield(self._started)
            yield subscription
        finally:
            followers = self._followers.get((kind, key))
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._followers[(kind, key)]

    async def _run(self, started: asyncio.Future[None]) -> None:
        try:
            self._start(await self.db.read(read_log_end))
        except Exception as error:  # the database is away: the streams that wait for the start fail with it
            started.set_exception(error)
            return
        started.set_result(None)
        while self._followers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                read = await self.db.read(self._read_log)
            except Exception:  # the database is away: streams stay open and catch up when it is back
                log.warning("event hub: could not read the job event log", exc_info=True)
                continue
            for event in self._release(read):
                for key in (("job", event.job_id), ("account", event.account_id)):
                    for subscription in list(self._followers.get(key, ())):
                        if not subscription.deliver(event):
                            self._followers[key].discard(subscription)
                            subscription.queue = asyncio.Queue(1)
                            subscription.deliver(None)  # too slow: close it

    def _start(self, log_end: LogEnd) -> None:
        """The cursor at the log's newest id; the ids below it that are missing (a transaction still running may
        commit one) are gaps like any other, except that they do not hold back `released_through`: the events
        already in the log up to `newest` are never sent by the hub, so a stream that starts now must read them
        all from the log (a missing one that commits later is sent by the hub, after them)."""
        newest, after, now = log_end.newest, log_end.after, time.monotonic()
        self._gaps = {i: Gap(now, after.next_id if after else None)
                      for i in range(max(1, newest - MAX_GAP_IDS + 1), newest) if i not in log_end.present}
        self._seen, self._held, self._released = newest, {}, newest

    def _read_log(self, conn: Connection) -> LogRead:
        """Events after the cursor and those of the gaps that appeared, between two horizons (each statement
        on its own snapshot: `before`'s is older than the read's, `after`'s newer)."""
        before = transaction_horizon(conn)
        events = events_after(conn, self._seen)
        if self._gaps:
            events += events_with_ids(conn, list(self._gaps))
        return LogRead(events, before, transaction_horizon(conn))

    def _release(self, read: LogRead) -> list[JobEvent]:
        """What a read lets go to the streams, oldest first: every event below the oldest gap still open."""
        now = time.monotonic()
        for event in sorted(read.events, key=lambda e: e.id):
            if self._gaps.pop(event.id, None) is not None:
                self._held[event.id] = event
            elif event.id > self._seen:
                if event.id - self._seen - 1 <= MAX_GAP_IDS:
                    self._gaps.update({i: Gap(now) for i in range(self._seen + 1, event.id)})
                self._seen = event.id
                self._held[event.id] = event
        for event_id, gap in list(self._gaps.items()):
            if gap.bound is None and read.after is not None:  # missed by this read: resolved by a later one
                gap.bound = read.after.next_id
                continue
            ended = read.before is None or (gap.bound is not None and read.before.oldest_running >= gap.bound)
            if ended or now - gap.since > GAP_WAIT_SECONDS:
                del self._gaps[event_id]
        holding = None  # the oldest gap that still holds what came after it
        for event_id, gap in sorted(self._gaps.items()):
            if now - gap.since <= HOLD_SECONDS:
                holding = event_id
                break
            if not gap.passed:  # from now on sent late, out of order, should it appear
                gap.passed = True
                log.info("event hub: event id %d not committed after %.0f s; sending the newer ones", event_id,
                         HOLD_SECONDS)
        ready = sorted(i for i in self._held if holding is None or i < holding)
        self._released = max(self._released, holding - 1 if holding is not None else self._seen)
        return [self._held.pop(i) for i in ready]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
